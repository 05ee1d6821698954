/* fuzz_token.c - libFuzzer target of the token decoder every Verify runs
 * (crypto_token_parse: a constant-time decoder of its own, written for
 * speed), checked against the plain reference it replaced: the 64
 * base64url characters only, then libsodium's decoder, 32 bytes out.
 * Both must accept the same texts and give the same bytes; the only text
 * the reference takes and the fast one refuses is one whose last
 * character carries spare bits (two texts for one token). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "crypto.h"

static int reference(uint8_t raw[CRYPTO_TOKEN_BYTES], const char *text, size_t len)
{
    size_t n = 0;
    if (len != CRYPTO_TOKEN_TEXTLEN - 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return -1;
    }
    if (sodium_base642bin(raw, CRYPTO_TOKEN_BYTES, text, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != CRYPTO_TOKEN_BYTES)
        return -1;
    return 0;
}

static int spare_bits_set(const char *text)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *p = strchr(alphabet, text[CRYPTO_TOKEN_TEXTLEN - 2]);
    return p && ((p - alphabet) & 3) != 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    uint8_t fast[CRYPTO_TOKEN_BYTES], ref[CRYPTO_TOKEN_BYTES];
    if (!ready && (ready = crypto_init() == 0 ? 1 : -1) < 0)
        abort();
    const char *text = (const char *)data;
    int a = crypto_token_parse(fast, text, size);
    int b = reference(ref, text, size);
    if (a == 0 && (b != 0 || memcmp(fast, ref, sizeof fast) != 0)) {
        fprintf(stderr, "the fast decoder took a text the reference refuses or decodes otherwise\n");
        abort();
    }
    if (a != 0 && b == 0 && !spare_bits_set(text)) {
        fprintf(stderr, "the fast decoder refused a token the reference takes\n");
        abort();
    }
    return 0;
}
