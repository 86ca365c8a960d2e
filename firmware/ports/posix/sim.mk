# The POSIX port's own C sources (the simulator adds engine.mk's and app.mk's) and the simulator's
# compiler flags: the Makefile here includes this file and `pocketgpt device` reads it
# (host/pocketgpt/srclists.py), so both build the same thing.
# Format: `NAME := word ...`, one plain line per list, file names relative to this folder.

SIM_SRCS := sim_main.c sim_audio.c
# warnings are errors, as in every C build of the project
SIM_CFLAGS := -std=c11 -Wall -Wextra -Wshadow -Werror
