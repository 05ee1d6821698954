# Turns a binary file into a C array: cmake -DIN=file -DOUT=file.c -P embed.cmake
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE ${OUT} "/* generated from ${IN} */\n#include <stddef.h>\nconst unsigned char tokend_protoset[] = {${body}};\nconst size_t tokend_protoset_len = ${len};\n")
