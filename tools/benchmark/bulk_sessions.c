/* bulk_sessions.c - for tools/bench scale only: sessions for many users
 * without going through login (10M Argon2id checks would take days of CPU).
 * Each user's token is derived from its user_id, so the benchmark can
 * verify any of them without keeping a list:
 *   raw token = BLAKE2b-256("tokend-bench" || user_id), text = base64url(raw).
 * The sessions are written as logins write them (record, owner and expiry
 * indexes, store token), 10000 per write transaction (store_sessions_bulk).
 *
 * usage: tokend-bench-sessions DATA_DIR APP_ID FIRST_USER COUNT   writes sessions
 *        tokend-bench-sessions token USER_ID...                    prints tokens */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "crypto.h"
#include "store.h"

#define BATCH 10000

static void token_of(uint64_t uid, uint8_t raw[CRYPTO_TOKEN_BYTES], char text[CRYPTO_TOKEN_TEXTLEN])
{
    uint8_t in[20];
    memcpy(in, "tokend-bench", 12);
    for (int i = 0; i < 8; i++)
        in[12 + i] = (uint8_t)(uid >> (8 * i));
    crypto_generichash(raw, CRYPTO_TOKEN_BYTES, in, sizeof in, NULL, 0);
    crypto_base64_encode(text, CRYPTO_TOKEN_TEXTLEN, raw, CRYPTO_TOKEN_BYTES, CRYPTO_BASE64URL_NOPAD);
}

int main(int argc, char **argv)
{
    if (crypto_init() != 0)
        return 1;
    if (argc >= 3 && strcmp(argv[1], "token") == 0) {
        uint8_t raw[CRYPTO_TOKEN_BYTES];
        char text[CRYPTO_TOKEN_TEXTLEN];
        for (int i = 2; i < argc; i++) {
            token_of(strtoull(argv[i], NULL, 10), raw, text);
            puts(text);
        }
        return 0;
    }
    if (argc != 5) {
        fprintf(stderr, "usage: tokend-bench-sessions DATA_DIR APP_ID FIRST_USER COUNT\n"
                        "       tokend-bench-sessions token USER_ID...\n");
        return 2;
    }
    store *s;
    char err[256];
    if (store_open(&s, argv[1], 0, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    uint64_t app = strtoull(argv[2], NULL, 10), first = strtoull(argv[3], NULL, 10);
    uint64_t count = strtoull(argv[4], NULL, 10);
    static uint8_t hashes[BATCH][CRYPTO_HASH_BYTES], shashes[BATCH][CRYPTO_HASH_BYTES];
    static store_session sess[BATCH];
    static store_session *ss[BATCH];
    static char secret[BATCH][48];
    int64_t now = (int64_t)time(NULL) * 1000;
    for (uint64_t done = 0; done < count;) {
        size_t n = count - done < BATCH ? (size_t)(count - done) : BATCH;
        for (size_t i = 0; i < n; i++) {
            uint8_t raw[CRYPTO_TOKEN_BYTES];
            char text[CRYPTO_TOKEN_TEXTLEN];
            uint64_t uid = first + done + i;
            token_of(uid, raw, text);
            crypto_token_hash(hashes[i], raw, store_token_key(s));
            raw[0] ^= 0x5a;   /* the store token: another value of the same kind */
            crypto_token_hash(shashes[i], raw, store_token_key(s));
            tokend__v1__store__session__init(&sess[i]);
            sess[i].user_id = uid;
            sess[i].app_id = app;
            sess[i].device_guid = "";
            sess[i].created_ms = now;
            sess[i].expire_ms = now + 30LL * 24 * 3600 * 1000;
            crypto_random_base64(secret[i], sizeof secret[i], 32);
            sess[i].access_key_secret = secret[i];
            sess[i].public_key = "";
            sess[i].key_id = store_token_key_id(s);
            ss[i] = &sess[i];
        }
        int rc = store_sessions_bulk(s, n, (const uint8_t(*)[CRYPTO_HASH_BYTES])hashes,
                                     (const uint8_t(*)[CRYPTO_HASH_BYTES])shashes, ss);
        if (rc != STORE_OK) {
            fprintf(stderr, "sessions %llu..: %s\n", (unsigned long long)(first + done),
                    store_strerror(rc));
            store_close(s);
            return 1;
        }
        done += n;
    }
    store_close(s);
    return 0;
}
