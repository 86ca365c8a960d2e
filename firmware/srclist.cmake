# pg_mk_list(MK NAME OUT): the words of the `NAME := a.c b.c` line of a source list file
# (firmware/engine/engine.mk, firmware/app/app.mk), so that the ESP-IDF components compile the
# same files as the Makefiles and setup.py, from a list written once. The format is one plain line
# per list (host/pocketgpt/srclists.py reads it the same way and refuses anything else).
function(pg_mk_list mk name out)
    file(STRINGS "${mk}" lines REGEX "^${name}[ \t]*:=")
    list(LENGTH lines n)
    if(NOT n EQUAL 1)
        message(FATAL_ERROR "${mk}: expected one `${name} := ...` line, found ${n}")
    endif()
    string(REGEX REPLACE "^${name}[ \t]*:=[ \t]*" "" words "${lines}")
    string(REGEX REPLACE "#.*$" "" words "${words}")
    string(REGEX MATCHALL "[^ \t]+" words "${words}")
    set(${out} ${words} PARENT_SCOPE)
endfunction()
