# The app's C sources (portable device logic, no chip code): the one list every build reads. The
# simulator's Makefile includes it; `pocketgpt device` and the tests read it through
# host/pocketgpt/srclists.py; the ESP-IDF component (CMakeLists.txt here) parses it. A new source
# file is one word on this line.
#
# Format, kept simple so that CMake and Python read it too: `NAME := file.c file.c ...`, one line
# per list (no `\` continuation), file names relative to this folder.

APP_SRCS := pg_json.c relay_proto.c router.c settings.c pg_ws.c console.c pg_app.c app_relay.c app_voice.c audio.c chat.c
