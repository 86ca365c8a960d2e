# The POSIX port's own C sources (the simulator adds engine.mk's and app.mk's): the one list the
# Makefile here includes and `pocketgpt device` reads (host/pocketgpt/srclists.py).
# Format: `NAME := file.c ...`, one plain line per list, names relative to this folder.

SIM_SRCS := sim_main.c sim_audio.c
