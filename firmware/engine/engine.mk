# The engine's C sources: the one list every build reads. This Makefile and the simulator's
# include it; setup.py (the Python extension), `pocketgpt device`, the tests and
# tools/xtensa_check.py read it through host/pocketgpt/srclists.py; the ESP-IDF component
# (CMakeLists.txt here) parses it. A new source file is one word on one of these lines.
#
# Format, kept simple so that CMake and Python read it too: `NAME := file.c file.c ...`, one line
# per list (no `\` continuation), file names relative to this folder.

# portable C: every build compiles these
ENGINE_SRCS := pg_common.c gguf.c kernels_ref.c tokenizer.c textout.c sampler.c gpt2.c matmul.c
# per-chip kernels: a build adds its target's list (each file compiles to nothing elsewhere)
ENGINE_SRCS_X86 := kernels_x86.c
ENGINE_SRCS_ESP32S3 := kernels_esp32s3.c
