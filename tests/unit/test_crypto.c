/* test_crypto.c - crypto.c: Argon2id password hashes at a low cost, tokens
 * and their text form, keyed token hashes, random keys, equality. */
#define _GNU_SOURCE   /* RUSAGE_THREAD */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sodium.h>

#include "crypto.h"

/* Cheap enough for tests: 1 pass over 8 MiB. */
static const crypto_pwcost LOW = {1, 8u * 1024 * 1024};

static void test_init(void **state)
{
    (void)state;
    assert_int_equal(crypto_init(), 0);
    assert_int_equal(crypto_init(), 0);   /* idempotent */
}

static void test_password_hash_verify(void **state)
{
    (void)state;
    char h1[CRYPTO_PWHASH_STRBYTES], h2[CRYPTO_PWHASH_STRBYTES];
    const char *pw = "correct horse battery staple";

    assert_int_equal(crypto_password_hash(h1, pw, strlen(pw), LOW), 0);
    assert_true(strncmp(h1, "$argon2id$", 10) == 0);
    assert_true(strlen(h1) < CRYPTO_PWHASH_STRBYTES);
    assert_null(strstr(h1, pw));

    assert_int_equal(crypto_password_verify(h1, pw, strlen(pw)), 0);
    assert_int_equal(crypto_password_verify(h1, "correct horse battery stapl", strlen(pw) - 1), -1);
    assert_int_equal(crypto_password_verify(h1, "Correct horse battery staple", strlen(pw)), -1);
    assert_int_equal(crypto_password_verify(h1, "", 0), -1);
    /* The length given counts, not the C string. */
    assert_int_equal(crypto_password_verify(h1, pw, strlen(pw) - 1), -1);

    /* Salted: the same password hashes differently, both verify. */
    assert_int_equal(crypto_password_hash(h2, pw, strlen(pw), LOW), 0);
    assert_string_not_equal(h1, h2);
    assert_int_equal(crypto_password_verify(h2, pw, strlen(pw)), 0);

    /* Garbage and NULLs are refused, not crashed on. */
    assert_int_equal(crypto_password_verify("not a hash", pw, strlen(pw)), -1);
    assert_int_equal(crypto_password_verify(NULL, pw, strlen(pw)), -1);
    assert_int_equal(crypto_password_verify(h1, NULL, 0), -1);
    assert_int_equal(crypto_password_hash(h1, NULL, 0, LOW), -1);
}

static void test_password_binary_and_max(void **state)
{
    (void)state;
    char h[CRYPTO_PWHASH_STRBYTES];
    static char big[CRYPTO_PASSWORD_MAX + 1];
    memset(big, 'x', sizeof big);

    /* Exactly the maximum is hashed; one more byte is refused. */
    assert_int_equal(crypto_password_hash(h, big, CRYPTO_PASSWORD_MAX, LOW), 0);
    assert_int_equal(crypto_password_verify(h, big, CRYPTO_PASSWORD_MAX), 0);
    assert_int_equal(crypto_password_verify(h, big, CRYPTO_PASSWORD_MAX + 1), -1);
    assert_int_equal(crypto_password_hash(h, big, CRYPTO_PASSWORD_MAX + 1, LOW), -1);

    /* Bytes after an embedded NUL matter. */
    const char a[] = "abc\0defgh", b[] = "abc\0xxxxx";
    assert_int_equal(crypto_password_hash(h, a, sizeof a - 1, LOW), 0);
    assert_int_equal(crypto_password_verify(h, a, sizeof a - 1), 0);
    assert_int_equal(crypto_password_verify(h, b, sizeof b - 1), -1);
}

static void test_password_needs_rehash(void **state)
{
    (void)state;
    char h[CRYPTO_PWHASH_STRBYTES];
    assert_int_equal(crypto_password_hash(h, "password1", 9, LOW), 0);
    /* a stronger hash (an import's) is kept, not brought down to the server's cost */
    assert_int_equal(crypto_password_needs_rehash(h, ((crypto_pwcost){1, LOW.mem / 2}), 9), 0);
    assert_int_equal(crypto_password_needs_rehash(h, LOW, 9), 0);
    assert_int_equal(crypto_password_needs_rehash(h, CRYPTO_PWCOST_DEFAULT, 9), 1);
    assert_int_equal(crypto_password_needs_rehash(h, ((crypto_pwcost){2, LOW.mem}), 9), 1);
    assert_int_equal(crypto_password_needs_rehash(h, ((crypto_pwcost){1, 16u << 20}), 9), 1);
    assert_int_equal(crypto_password_needs_rehash("garbage", LOW, 9), -1);
    assert_int_equal(crypto_password_needs_rehash(NULL, LOW, 9), -1);
}

static void test_password_describe(void **state)
{
    (void)state;
    char h[CRYPTO_PWHASH_STRBYTES], out[64];
    assert_int_equal(crypto_password_hash(h, "password1", 9, LOW), 0);
    memset(out, 'Z', sizeof out);
    assert_int_equal(crypto_password_describe(h, out, sizeof out), 0);
    assert_string_equal(out, "argon2id m=8192 t=1 p=1");

    assert_int_equal(crypto_password_describe(
                         "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA", out,
                         sizeof out), 0);
    assert_string_equal(out, "argon2id m=19456 t=2 p=1");

    /* Not Argon2id, or not a hash at all. */
    assert_int_equal(crypto_password_describe(
                         "$argon2i$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaA", out,
                         sizeof out), -1);
    assert_int_equal(crypto_password_describe("$argon2id$", out, sizeof out), -1);
    assert_int_equal(crypto_password_describe("", out, sizeof out), -1);
    assert_int_equal(crypto_password_describe(NULL, out, sizeof out), -1);

    /* A short buffer is truncated, never overrun. */
    char small[9];
    memset(small, 'Z', sizeof small);
    crypto_password_describe(h, small, sizeof small);
    assert_non_null(memchr(small, '\0', sizeof small));
}

static int urlsafe(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

static void test_token_new_and_parse(void **state)
{
    (void)state;
    uint8_t raw[CRYPTO_TOKEN_BYTES], back[CRYPTO_TOKEN_BYTES], raw2[CRYPTO_TOKEN_BYTES];
    char text[CRYPTO_TOKEN_TEXTLEN], text2[CRYPTO_TOKEN_TEXTLEN];

    for (int round = 0; round < 200; round++) {
        memset(text, 'Z', sizeof text);
        assert_int_equal(crypto_token_new(raw, text), 0);
        assert_int_equal(strlen(text), 43);
        for (size_t i = 0; i < 43; i++)
            if (!urlsafe(text[i]))
                fail_msg("token char %zu is %#x in %s", i, (unsigned char)text[i], text);
        memset(back, 0, sizeof back);
        assert_int_equal(crypto_token_parse(back, text, 43), 0);
        assert_memory_equal(back, raw, CRYPTO_TOKEN_BYTES);
    }

    /* Two tokens differ. */
    assert_int_equal(crypto_token_new(raw2, text2), 0);
    assert_memory_not_equal(raw, raw2, CRYPTO_TOKEN_BYTES);
    assert_string_not_equal(text, text2);

    /* The text is the raw bytes in base64url without padding. */
    char expect[CRYPTO_TOKEN_TEXTLEN];
    sodium_bin2base64(expect, sizeof expect, raw2, sizeof raw2,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    assert_string_equal(text2, expect);
}

static void test_token_parse_rejects(void **state)
{
    (void)state;
    uint8_t raw[CRYPTO_TOKEN_BYTES], back[CRYPTO_TOKEN_BYTES];
    char text[CRYPTO_TOKEN_TEXTLEN], bad[64];

    assert_int_equal(crypto_token_new(raw, text), 0);

    /* Wrong lengths. */
    assert_int_equal(crypto_token_parse(back, text, 42), -1);
    assert_int_equal(crypto_token_parse(back, text, 0), -1);
    snprintf(bad, sizeof bad, "%sA", text);
    assert_int_equal(crypto_token_parse(back, bad, 44), -1);
    snprintf(bad, sizeof bad, "%s=", text);
    assert_int_equal(crypto_token_parse(back, bad, 44), -1);
    assert_int_equal(crypto_token_parse(back, NULL, 43), -1);

    /* Characters outside base64url, at the start, middle and end. */
    const char subst[] = {'+', '/', '=', ' ', '.', '\0', '\n', '\x7f', '*'};
    const size_t pos[] = {0, 21, 42};
    for (size_t i = 0; i < sizeof subst; i++) {
        for (size_t j = 0; j < sizeof pos / sizeof pos[0]; j++) {
            memcpy(bad, text, 44);
            bad[pos[j]] = subst[i];
            if (crypto_token_parse(back, bad, 43) != -1)
                fail_msg("parse accepted %#x at %zu", (unsigned char)subst[i], pos[j]);
        }
    }

    /* 43 chars carry 258 bits: a last char with the 2 spare bits set is not
     * the text of any token, so one token has exactly one text. */
    memcpy(bad, text, 44);
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t v = (size_t)(strchr(alpha, text[42]) - alpha);
    bad[42] = alpha[v | 1];
    assert_int_equal(crypto_token_parse(back, bad, 43), -1);
}

/* Bytes 0x80..0xFF are not base64url either. (libsodium 1.0.18's decoder
 * reads every one of them as 63, the value of '_'.) */
static void test_token_parse_rejects_non_ascii(void **state)
{
    (void)state;
    uint8_t raw[CRYPTO_TOKEN_BYTES], back[CRYPTO_TOKEN_BYTES];
    char text[CRYPTO_TOKEN_TEXTLEN], bad[CRYPTO_TOKEN_TEXTLEN];
    int accepted = 0, first = -1;

    assert_int_equal(crypto_token_new(raw, text), 0);
    for (int c = 0x80; c <= 0xFF; c++) {
        memcpy(bad, text, sizeof bad);
        bad[0] = (char)c;
        if (crypto_token_parse(back, bad, 43) == 0) {
            if (first < 0)
                first = c;
            accepted++;
        }
    }
    if (accepted)
        fail_msg("crypto_token_parse accepted %d texts with a byte 0x80..0xFF "
                 "in place of the first char (first: %#x)", accepted, first);
}

static void test_token_hash(void **state)
{
    (void)state;
    uint8_t raw[CRYPTO_TOKEN_BYTES], raw2[CRYPTO_TOKEN_BYTES];
    uint8_t k1[CRYPTO_KEY_BYTES], k2[CRYPTO_KEY_BYTES];
    uint8_t a[CRYPTO_HASH_BYTES], b[CRYPTO_HASH_BYTES], c[CRYPTO_HASH_BYTES],
        d[CRYPTO_HASH_BYTES];
    char text[CRYPTO_TOKEN_TEXTLEN];

    crypto_token_new(raw, text);
    crypto_token_new(raw2, text);
    crypto_random(k1, sizeof k1);
    memcpy(k2, k1, sizeof k2);
    k2[31] ^= 1;

    assert_int_equal(crypto_token_hash(a, raw, k1), 0);
    assert_int_equal(crypto_token_hash(b, raw, k1), 0);
    assert_memory_equal(a, b, CRYPTO_HASH_BYTES);          /* deterministic */
    assert_int_equal(crypto_token_hash(c, raw, k2), 0);
    assert_memory_not_equal(a, c, CRYPTO_HASH_BYTES);      /* keyed */
    assert_int_equal(crypto_token_hash(d, raw2, k1), 0);
    assert_memory_not_equal(a, d, CRYPTO_HASH_BYTES);      /* per token */
    assert_memory_not_equal(a, raw, CRYPTO_HASH_BYTES);    /* not the token itself */

    /* It is keyed BLAKE2b-256 of the raw token. */
    uint8_t want[CRYPTO_HASH_BYTES];
    crypto_generichash(want, sizeof want, raw, sizeof raw, k1, sizeof k1);
    assert_memory_equal(a, want, CRYPTO_HASH_BYTES);
    /* ...whatever key the thread hashed with before (it keeps the state
     * after the key block of the last one), also a key changed in place,
     * and on another thread. */
    uint8_t k[CRYPTO_KEY_BYTES], e[CRYPTO_HASH_BYTES];
    for (int i = 0; i < 8; i++) {
        memcpy(k, i % 2 ? k2 : k1, sizeof k);
        if (i >= 4)
            k[i] ^= 0x80;
        crypto_random(raw2, sizeof raw2);
        crypto_generichash(want, sizeof want, raw2, sizeof raw2, k, sizeof k);
        assert_int_equal(crypto_token_hash(e, raw2, k), 0);
        assert_memory_equal(e, want, CRYPTO_HASH_BYTES);
    }
    assert_true(crypto_token_hash_fast()); /* the shortcut passed its self-check */
}

/* crypto_token_text_hash decodes the text into the hash's own state: the
 * same hash as crypto_token_parse then crypto_token_hash (keyed BLAKE2b of
 * the bytes), for any key the thread met before, and -1 for what the parse
 * refuses (a length off by one, a character out of the alphabet, spare
 * bits set) - also right after a good token, whose bytes must not linger. */
static void test_token_text_hash(void **state)
{
    (void)state;
    uint8_t raw[CRYPTO_TOKEN_BYTES], k[2][CRYPTO_KEY_BYTES];
    uint8_t got[CRYPTO_HASH_BYTES], want[CRYPTO_HASH_BYTES];
    char text[CRYPTO_TOKEN_TEXTLEN], bad[CRYPTO_TOKEN_TEXTLEN + 1];
    crypto_random(k, sizeof k);
    for (int i = 0; i < 200; i++) {
        const uint8_t *key = k[i % 3 == 0];
        crypto_token_new(raw, text);
        crypto_generichash(want, sizeof want, raw, sizeof raw, key, CRYPTO_KEY_BYTES);
        memset(got, 0, sizeof got);
        assert_int_equal(crypto_token_text_hash(got, text, strlen(text), key), 0);
        assert_memory_equal(got, want, sizeof want);
        assert_int_equal(crypto_token_hash(got, raw, key), 0);
        assert_memory_equal(got, want, sizeof want);

        memcpy(bad, text, sizeof text);
        assert_int_equal(crypto_token_text_hash(got, bad, 42, key), -1);
        bad[43] = 'A', bad[44] = '\0';
        assert_int_equal(crypto_token_text_hash(got, bad, 44, key), -1);
        memcpy(bad, text, sizeof text);
        bad[i % 43] = i % 2 ? '=' : (char)0xC3;
        assert_int_equal(crypto_token_text_hash(got, bad, 43, key), -1);
        memcpy(bad, text, sizeof text);
        bad[42] = bad[42] == 'B' ? 'C' : 'B';   /* one of the 2 spare bits set */
        assert_int_equal(crypto_token_text_hash(got, bad, 43, key), -1);
    }
    assert_int_equal(crypto_token_text_hash(got, NULL, 43, k[0]), -1);
    assert_true(crypto_token_hash_fast());
}

static void check_random_base64(size_t len, size_t want_chars)
{
    char out[128], out2[128];
    unsigned char bin[64];
    size_t n = 0;
    memset(out, 'Z', sizeof out);
    assert_int_equal(crypto_random_base64(out, sizeof out, len), 0);
    assert_int_equal(strlen(out), want_chars);
    /* Standard base64 that decodes back to len bytes. */
    assert_int_equal(sodium_base642bin(bin, sizeof bin, out, strlen(out), NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL), 0);
    assert_int_equal(n, len);
    assert_int_equal(crypto_random_base64(out2, sizeof out2, len), 0);
    assert_string_not_equal(out, out2);
}

static void test_random_base64(void **state)
{
    (void)state;
    char out[64];
    check_random_base64(16, 24);
    check_random_base64(32, 44);
    /* Exactly enough room works; one byte less is refused. */
    assert_int_equal(crypto_random_base64(out, 25, 16), 0);
    assert_int_equal(strlen(out), 24);
    assert_int_equal(crypto_random_base64(out, 24, 16), -1);
    assert_int_equal(crypto_random_base64(out, 45, 32), 0);
    assert_int_equal(crypto_random_base64(out, 44, 32), -1);
}

static void test_random(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    crypto_random(a, sizeof a);
    crypto_random(b, sizeof b);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_memory_not_equal(a, b, sizeof a);
}

static void test_equal_and_wipe(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    crypto_random(a, sizeof a);
    memcpy(b, a, sizeof b);
    assert_int_equal(crypto_equal(a, b, sizeof a), 0);
    b[0] ^= 0x80;
    assert_int_equal(crypto_equal(a, b, sizeof a), -1);
    b[0] ^= 0x80;
    b[31] ^= 1;
    assert_int_equal(crypto_equal(a, b, sizeof a), -1);
    assert_int_equal(crypto_equal(a, b, 31), 0);   /* only len bytes compared */
    assert_int_equal(crypto_equal(a, b, 0), 0);
    /* every length, every byte, every bit: the word steps and the tail */
    uint8_t x[45], y[45];
    crypto_random(x, sizeof x);
    for (size_t len = 1; len <= sizeof x; len++)
        for (size_t i = 0; i < len; i++)
            for (int bit = 0; bit < 8; bit++) {
                memcpy(y, x, sizeof y);
                y[i] ^= (uint8_t)(1u << bit);
                assert_int_equal(crypto_equal(x, y, len), -1);
                assert_int_equal(crypto_equal(x, y, i), 0);
            }

    crypto_wipe(a, sizeof a);
    uint8_t zero[32] = {0};
    assert_memory_equal(a, zero, sizeof a);
}

/* The base64 the wire forms use: each variant both ways, strict decoding. */
static void test_base64(void **state)
{
    static const uint8_t bin[] = {0xfb, 0xff, 0x01, 0x02};
    char text[16];
    uint8_t out[8];
    size_t n = 0;

    assert_int_equal(crypto_base64_size(sizeof bin, CRYPTO_BASE64), 9);
    assert_int_equal(crypto_base64_encode(text, sizeof text, bin, sizeof bin, CRYPTO_BASE64), 0);
    assert_string_equal(text, "+/8BAg==");
    assert_int_equal(crypto_base64_encode(text, sizeof text, bin, sizeof bin, CRYPTO_BASE64_NOPAD), 0);
    assert_string_equal(text, "+/8BAg");
    assert_int_equal(crypto_base64_encode(text, sizeof text, bin, sizeof bin, CRYPTO_BASE64URL_NOPAD), 0);
    assert_string_equal(text, "-_8BAg");
    assert_int_equal(crypto_base64_encode(text, 8, bin, sizeof bin, CRYPTO_BASE64), -1); /* no room */

    assert_int_equal(crypto_base64_decode(out, sizeof out, "+/8BAg==", 8, NULL, &n, CRYPTO_BASE64), 0);
    assert_int_equal(n, sizeof bin);
    assert_memory_equal(out, bin, sizeof bin);
    assert_int_equal(crypto_base64_decode(out, sizeof out, "+/8B\r\nAg==", 10, "\r\n", &n,
                                          CRYPTO_BASE64), 0);
    assert_int_equal(n, sizeof bin);
    assert_int_equal(crypto_base64_decode(out, sizeof out, "-_8BAg", 6, NULL, &n,
                                          CRYPTO_BASE64URL_NOPAD), 0);
    assert_memory_equal(out, bin, sizeof bin);
    /* strict: a missing pad, the other alphabet, stray bits, a full buffer */
    assert_int_equal(crypto_base64_decode(out, sizeof out, "+/8BAg", 6, NULL, &n, CRYPTO_BASE64), -1);
    assert_int_equal(crypto_base64_decode(out, sizeof out, "-_8BAg", 6, NULL, &n, CRYPTO_BASE64_NOPAD), -1);
    assert_int_equal(crypto_base64_decode(out, sizeof out, "+/8BAh", 6, NULL, &n, CRYPTO_BASE64_NOPAD), -1);
    assert_int_equal(crypto_base64_decode(out, 3, "+/8BAg", 6, NULL, &n, CRYPTO_BASE64_NOPAD), -1);
    /* not base64 at all, though libsodium alone would take them: a byte past
     * ASCII (read as '/'), a NUL (skipped as an ignored character) */
    assert_int_equal(crypto_base64_decode(out, sizeof out, "+\xaf" "8BAg==", 8, NULL, &n, CRYPTO_BASE64), -1);
    assert_int_equal(crypto_base64_decode(out, sizeof out, "+/8B\0Ag==", 9, "\r\n", &n, CRYPTO_BASE64), -1);
}

/* crypto_token_parse decodes by itself (no libsodium base64): it must take
 * and refuse exactly what the strict base64url decoder does, and give the
 * same bytes, over random texts from the alphabet, with one character
 * changed to anything, and with spare bits set. */
static void test_token_parse_matches_base64(void **state)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t a[CRYPTO_TOKEN_BYTES], b[CRYPTO_TOKEN_BYTES], r[64];
    char text[44];
    (void)state;
    for (int round = 0; round < 20000; round++) {
        crypto_random(r, sizeof r);
        for (int i = 0; i < 43; i++)
            text[i] = abc[r[i] & 63];
        text[43] = '\0';
        if (round % 3 == 1)
            text[r[50] % 43] = (char)r[51];          /* any byte, maybe NUL or >= 0x80 */
        size_t n = 0;
        int want = crypto_base64_decode(b, sizeof b, text, 43, NULL, &n, CRYPTO_BASE64URL_NOPAD) == 0 &&
                   n == CRYPTO_TOKEN_BYTES && strspn(text, abc) == 43 ? 0 : -1;
        /* (strspn: libsodium 1.0.18 takes bytes >= 0x80 as '_', see below) */
        int got = crypto_token_parse(a, text, 43);
        if (got != want)
            print_error("token %.43s: parse %d, base64 %d\n", text, got, want);
        assert_int_equal(got, want);
        if (got == 0)
            assert_memory_equal(a, b, CRYPTO_TOKEN_BYTES);
    }
}

/* bcrypt ($2b$, $2y$) for imported accounts: verified, its cost read (mem
 * 0), always due for an Argon2id rehash, and made for decoys of that cost. */
static void test_bcrypt(void **state)
{
    char h[CRYPTO_PWHASH_STRBYTES], y[CRYPTO_PWHASH_STRBYTES];
    crypto_pwcost c;
    (void)state;
    assert_int_equal(crypto_password_hash(h, "bcrypt secret", 13, (crypto_pwcost){5, 0}), 0);
    assert_memory_equal(h, "$2b$05$", 7);
    assert_int_equal(strlen(h), 60);
    assert_true(crypto_password_hash_valid(h));
    assert_int_equal(crypto_password_verify(h, "bcrypt secret", 13), 0);
    assert_int_equal(crypto_password_verify(h, "bcrypt secreT", 13), -1);
    assert_int_equal(crypto_password_verify(h, "bcrypt secret\0x", 15), -1);
    strcpy(y, h);
    y[2] = 'y';                               /* $2y$: the same algorithm */
    assert_int_equal(crypto_password_verify(y, "bcrypt secret", 13), 0);
    assert_int_equal(crypto_password_cost(h, &c), 0);
    assert_int_equal(c.ops, 5);
    assert_int_equal(c.mem, 0);
    assert_int_equal(crypto_password_needs_rehash(h, CRYPTO_PWCOST_DEFAULT, 9), 1);
    /* a password longer than bcrypt reads is not rehashed: its bytes past 72
     * were never checked, and would become the only password that works */
    assert_int_equal(crypto_password_needs_rehash(h, CRYPTO_PWCOST_DEFAULT, 72), 1);
    assert_int_equal(crypto_password_needs_rehash(h, CRYPTO_PWCOST_DEFAULT, 73), 0);
    /* a spelling libxcrypt would not write never verifies: not imported */
    char odd[61];
    const char *abc = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    strcpy(odd, h);
    odd[28] = abc[(strchr(abc, odd[28]) - abc) | 1];   /* a spare bit of the salt set */
    assert_false(crypto_password_hash_valid(odd));
    assert_int_equal(crypto_password_verify(odd, "bcrypt secret", 13), -1);
    strcpy(odd, h);
    odd[59] = abc[(strchr(abc, odd[59]) - abc) | 1];   /* a spare bit of the hash set */
    assert_false(crypto_password_hash_valid(odd));
    /* costs that would take minutes to days a check */
    strcpy(odd, h);
    memcpy(odd + 4, "17", 2);
    assert_false(crypto_password_hash_valid(odd));
    memcpy(odd + 4, "31", 2);
    assert_false(crypto_password_hash_valid(odd));
    y[2] = 'a';                               /* $2a$ is not taken */
    assert_false(crypto_password_hash_valid(y));
    assert_int_equal(crypto_password_verify(y, "bcrypt secret", 13), -1);
    h[59] = '\0';
    assert_false(crypto_password_hash_valid(h));
    assert_false(crypto_password_hash_valid("$argon2id$v=19$m=8,t=1,p=1$bad"));
    /* Argon2id of a cost past the bounds, or of too many lanes: refused */
    char a2[CRYPTO_PWHASH_STRBYTES], big[CRYPTO_PWHASH_STRBYTES + 32];
    assert_int_equal(crypto_password_hash(a2, "argon secret", 12, LOW), 0);
    assert_true(crypto_password_hash_valid(a2));
    const char *rest = strchr(strstr(a2, "$m="), ',');        /* ",t=..,p=..$salt$hash" */
    rest = strchr(rest + 1, ',');                              /* ",p=1$salt$hash" */
    snprintf(big, sizeof big, "$argon2id$v=19$m=8192,t=4294967295%s", rest);
    assert_false(crypto_password_hash_valid(big));
    snprintf(big, sizeof big, "$argon2id$v=19$m=4294967295,t=1%s", rest);
    assert_false(crypto_password_hash_valid(big));
    snprintf(big, sizeof big, "$argon2id$v=19$m=8192,t=1,p=64%s", strchr(rest + 1, '$'));
    assert_false(crypto_password_hash_valid(big));
    assert_int_equal(crypto_password_hash(h, "x", 1, (crypto_pwcost){3, 0}), -1);
}

/* --- the Argon2id work area (crypto.c) --------------------------------------- */

/* How many anonymous rw-p mappings of exactly `len` bytes this process
 * has, and whether the last one holds only zeros. */
static int maps_of(size_t len, int *zeroed)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8], path[256] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &lo, &hi, perms, path) < 3 ||
            hi - lo != len || strcmp(perms, "rw-p") != 0 || path[0])
            continue;
        n++;
        const unsigned char *p = (const unsigned char *)lo;
        *zeroed = 1;   /* of the last one */
        for (size_t i = 0; i < len; i++)
            if (p[i]) {
                *zeroed = 0;
                break;
            }
    }
    fclose(f);
    return n;
}

static long thread_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt;
}

/* Sizes of hashes here: odd page counts, which no other mapping of this
 * test (ASan's included) has. */
#define MIB ((size_t)1 << 20)
#define S1 (1 * MIB + 20 * 1024)
#define S3 (3 * MIB + 12 * 1024)
#define S5 (5 * MIB + 28 * 1024)

/* What a thread hashing saw; the test thread checks it (cmocka asserts only there). */
struct area_seen {
    int hashed, right, wrong, maps, zeroed;
    long faults;
    crypto_pwcost cost;
};

/* Hashes at s->cost in a thread of its own, then checks the password
 * right and wrong four times each, counting this thread's page faults. */
static void *area_thread(void *arg)
{
    struct area_seen *s = arg;
    const char *pw = "area password";
    size_t n = strlen(pw);
    char h[CRYPTO_PWHASH_STRBYTES];
    s->hashed = crypto_password_hash(h, pw, n, s->cost);
    long f0 = thread_faults();
    for (int i = 0; i < 4; i++) {
        s->right |= crypto_password_verify(h, pw, n);
        s->wrong += crypto_password_verify(h, "area passworD", n);
    }
    s->faults = thread_faults() - f0;
    s->maps = maps_of(s->cost.mem, &s->zeroed);
    return NULL;
}

static struct area_seen hash_in_thread(size_t mem)
{
    struct area_seen s = {.cost = {1, mem}};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, area_thread, &s), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(s.hashed, 0);
    assert_int_equal(s.right, 0);
    assert_int_equal(s.wrong, -4);
    return s;
}

/* Two threads hashing at once each get an area of their own: had they
 * shared one, the checks would come out wrong. */
static pthread_barrier_t together;

static void *area_racer(void *arg)
{
    struct area_seen *s = arg;
    pthread_barrier_wait(&together);
    for (int i = 0; i < 5; i++)
        area_thread(s);
    return NULL;
}

static void test_password_area_at_once(void **state)
{
    (void)state;
    struct area_seen s[2] = {{.cost = {1, S3}}, {.cost = {1, S3}}};
    pthread_t t[2];
    crypto_area_trim(0);
    assert_int_equal(pthread_barrier_init(&together, NULL, 2), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, area_racer, &s[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(s[i].hashed, 0);
        assert_int_equal(s[i].right, 0);
        assert_int_equal(s[i].wrong, -20);
    }
    pthread_barrier_destroy(&together);
    assert_in_range(crypto_area_bytes(), S3, 2 * S3);   /* 2 x S3 when they overlapped */
    crypto_area_trim(0);
}

/* libsodium's map of a hash's memory is served from an area the process
 * keeps, which is wiped after each hash and outlives the thread; a cheaper
 * hash reuses it, a costlier one takes a bigger area in its place, and a
 * trim unmaps it. Other maps go to the kernel (the file maps of test_store
 * do). */
static void test_password_area(void **state)
{
    (void)state;
    int zeroed;
#if !defined(__x86_64__) && !defined(__aarch64__)
    skip();   /* crypto.c lends no area there */
#endif
    crypto_area_trim(0);   /* the other tests' */
    assert_int_equal(crypto_area_bytes(), 0);
    struct area_seen s = hash_in_thread(S3);
    assert_int_equal(s.maps, 1);       /* hashing mapped it */
    assert_true(s.zeroed);             /* and wiped it after */
    assert_in_range(s.faults, 0, 200); /* 8 checks; without it each faults ~770 pages in afresh */
    assert_int_equal(maps_of(S3, &zeroed), 1);   /* kept after its thread ended */
    assert_int_equal(crypto_area_bytes(), S3);
    s = hash_in_thread(S1);
    assert_int_equal(s.maps, 0);       /* served from the S3 area */
    assert_in_range(s.faults, 0, 200);
    assert_int_equal(crypto_area_bytes(), S3);
    s = hash_in_thread(S5);
    assert_int_equal(s.maps, 1);
    assert_true(s.zeroed);
    assert_int_equal(maps_of(S3, &zeroed), 0);   /* replaced */
    assert_int_equal(crypto_area_bytes(), S5);
    crypto_area_trim(3600);            /* used a moment ago: kept */
    assert_int_equal(maps_of(S5, &zeroed), 1);
    crypto_area_trim(0);
    assert_int_equal(maps_of(S5, &zeroed), 0);
    assert_int_equal(crypto_area_bytes(), 0);
    /* An anonymous map of that size by other code is the kernel's, and goes. */
    void *p = mmap(NULL, S5, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 7, S5);
    assert_int_equal(maps_of(S5, &zeroed), 1);
    assert_false(zeroed);
    assert_int_equal(munmap(p, S5), 0);
    assert_int_equal(maps_of(S5, &zeroed), 0);
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_password_hash_verify),
        cmocka_unit_test(test_password_binary_and_max),
        cmocka_unit_test(test_password_needs_rehash),
        cmocka_unit_test(test_password_describe),
        cmocka_unit_test(test_password_area),
        cmocka_unit_test(test_password_area_at_once),
        cmocka_unit_test(test_token_new_and_parse),
        cmocka_unit_test(test_token_parse_rejects),
        cmocka_unit_test(test_token_parse_matches_base64),
        cmocka_unit_test(test_bcrypt),
        cmocka_unit_test(test_token_parse_rejects_non_ascii),
        cmocka_unit_test(test_token_hash),
        cmocka_unit_test(test_token_text_hash),
        cmocka_unit_test(test_random_base64),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_equal_and_wipe),
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests_name("crypto", tests, NULL, NULL);
}
