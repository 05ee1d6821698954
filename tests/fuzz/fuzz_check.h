/* fuzz_check.h - CHECK(c): a property the fuzz targets hold every input to;
 * a failure names itself and aborts, which libFuzzer reports as a crash and
 * keeps the input. */
#ifndef TOKEND_FUZZ_CHECK_H
#define TOKEND_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                            \
    do {                                                                                    \
        if (!(c)) {                                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);           \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

#endif
