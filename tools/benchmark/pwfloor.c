/* pwfloor.c - the login floor: how many crypto_pwhash_str_verify calls one
 * thread does per second at a given Argon2id cost (tokend's default:
 * t=2, m=19 MiB), the most a login worker can do. tools/bench runs it on
 * the server's CPU for a second before each second of the login row, so
 * the two are comparable.
 *
 * usage: pwfloor SECONDS [OPS MEM_MIB]   prints: <verifies/s> <verifies> <seconds>
 *        pwfloor hash PASSWORD [OPS MEM_MIB]   prints an Argon2id hash (tools/bench scale)
 * build: gcc -O2 pwfloor.c -lsodium -o pwfloor                              */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    char hash[crypto_pwhash_STRBYTES];
    const char *pw = "bench-password-1";
    if (argc >= 3 && strcmp(argv[1], "hash") == 0) {
        unsigned long long o = argc > 3 ? strtoull(argv[3], NULL, 10) : 2;
        size_t m = (argc > 4 ? strtoull(argv[4], NULL, 10) : 19) << 20;
        if (sodium_init() < 0 || crypto_pwhash_str(hash, argv[2], strlen(argv[2]), o, m) != 0)
            return 1;
        puts(hash);
        return 0;
    }
    double secs = argc > 1 ? atof(argv[1]) : 3;
    unsigned long long ops = argc > 2 ? strtoull(argv[2], NULL, 10) : 2;
    size_t mem = (argc > 3 ? strtoull(argv[3], NULL, 10) : 19) << 20;
    if (sodium_init() < 0 || secs <= 0 ||
        crypto_pwhash_str(hash, pw, strlen(pw), ops, mem) != 0) {
        fprintf(stderr, "usage: pwfloor SECONDS [OPS MEM_MIB]\n");
        return 2;
    }
    unsigned long n = 0;
    double t0 = now(), t;
    do {
        if (crypto_pwhash_str_verify(hash, pw, strlen(pw)) != 0)
            return 1;
        n++;
    } while ((t = now() - t0) < secs);
    printf("%.2f %lu %.3f\n", n / t, n, t);
    return 0;
}
