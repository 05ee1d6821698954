/* crypto.c - libsodium behind the small API of crypto.h.
 *
 * Tokens are 256 random bits, shown to clients as unpadded base64url and
 * kept in the store only as a BLAKE2b hash keyed with the data directory's
 * secret key: a copy of the database gives no usable token, and a lookup
 * by hash leaks nothing about other tokens through timing. */
#include <string.h>
#include <stdio.h>
#include <sodium.h>
#include "crypto.h"

int crypto_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

int crypto_password_hash(char *out, const char *password, size_t len, crypto_pwcost cost)
{
    if (!out || !password || len > CRYPTO_PASSWORD_MAX)
        return -1;
    return crypto_pwhash_str(out, password, len, cost.ops, cost.mem);
}

static _Atomic unsigned long long password_work;

int crypto_password_cost(const char *hash, crypto_pwcost *cost)
{
    unsigned m, t, p;
    const char *params = hash ? strstr(hash, "$m=") : NULL;
    if (!params || strncmp(hash, "$argon2id$", 10) != 0 ||
        sscanf(params, "$m=%u,t=%u,p=%u", &m, &t, &p) != 3)
        return -1;
    cost->ops = t;
    cost->mem = (size_t)m * 1024;
    return 0;
}

unsigned long long crypto_password_work(void)
{
    return password_work;
}

int crypto_password_verify(const char *hash, const char *password, size_t len)
{
    crypto_pwcost cost;
    if (!hash || !password || len > CRYPTO_PASSWORD_MAX)
        return -1;
    if (crypto_password_cost(hash, &cost) == 0)
        password_work += cost.ops * (cost.mem / 1024);
    return crypto_pwhash_str_verify(hash, password, len) == 0 ? 0 : -1;
}

int crypto_password_needs_rehash(const char *hash, crypto_pwcost cost)
{
    if (!hash)
        return -1;
    return crypto_pwhash_str_needs_rehash(hash, cost.ops, cost.mem);
}

int crypto_password_describe(const char *hash, char *out, size_t len)
{
    crypto_pwcost c;
    if (crypto_password_cost(hash, &c) != 0)
        return -1;
    snprintf(out, len, "argon2id m=%zu t=%llu p=1", c.mem / 1024, c.ops);
    return 0;
}

int crypto_token_new(uint8_t raw[CRYPTO_TOKEN_BYTES], char text[CRYPTO_TOKEN_TEXTLEN])
{
    randombytes_buf(raw, CRYPTO_TOKEN_BYTES);
    sodium_bin2base64(text, CRYPTO_TOKEN_TEXTLEN, raw, CRYPTO_TOKEN_BYTES,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int crypto_token_parse(uint8_t raw[CRYPTO_TOKEN_BYTES], const char *text, size_t len)
{
    size_t n = 0;
    if (!text || len != CRYPTO_TOKEN_TEXTLEN - 1)
        return -1;
    /* libsodium 1.0.18 reads bytes >= 0x80 as '_': one token, many texts. */
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

int crypto_token_hash(uint8_t out[CRYPTO_HASH_BYTES], const uint8_t raw[CRYPTO_TOKEN_BYTES],
                      const uint8_t key[CRYPTO_KEY_BYTES])
{
    return crypto_generichash(out, CRYPTO_HASH_BYTES, raw, CRYPTO_TOKEN_BYTES, key,
                              CRYPTO_KEY_BYTES);
}

void crypto_digest(uint8_t out[16], const void *in, size_t len, const uint8_t key[CRYPTO_KEY_BYTES])
{
    crypto_generichash(out, 16, in, len, key, CRYPTO_KEY_BYTES);
}

void crypto_random(void *buf, size_t len)
{
    randombytes_buf(buf, len);
}

int crypto_random_base64(char *out, size_t outlen, size_t len)
{
    unsigned char key[64];
    if (len > sizeof key || outlen < sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL))
        return -1;
    randombytes_buf(key, len);
    sodium_bin2base64(out, outlen, key, len, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(key, sizeof key);
    return 0;
}

static int sodium_variant(crypto_base64_variant v)
{
    switch (v) {
    case CRYPTO_BASE64: return sodium_base64_VARIANT_ORIGINAL;
    case CRYPTO_BASE64_NOPAD: return sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
    default: return sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    }
}

size_t crypto_base64_size(size_t len, crypto_base64_variant v)
{
    return sodium_base64_encoded_len(len, sodium_variant(v));
}

int crypto_base64_encode(char *out, size_t outlen, const void *in, size_t len,
                         crypto_base64_variant v)
{
    if (outlen < crypto_base64_size(len, v))
        return -1;
    sodium_bin2base64(out, outlen, in, len, sodium_variant(v));
    return 0;
}

int crypto_base64_decode(void *out, size_t outcap, const char *in, size_t len, const char *ignore,
                         size_t *out_len, crypto_base64_variant v)
{
    return sodium_base642bin(out, outcap, in, len, ignore, out_len, NULL, sodium_variant(v)) == 0
               ? 0 : -1;
}

int crypto_equal(const void *a, const void *b, size_t len)
{
    return sodium_memcmp(a, b, len) == 0 ? 0 : -1;
}

void crypto_wipe(void *buf, size_t len)
{
    sodium_memzero(buf, len);
}

static void seal_key(uint8_t sub[crypto_aead_xchacha20poly1305_ietf_KEYBYTES],
                     const uint8_t key[CRYPTO_KEY_BYTES])
{
    crypto_kdf_derive_from_key(sub, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, 1, "tokdseal",
                               key);
}

int crypto_seal(uint8_t *out, const void *in, size_t len, const uint8_t key[CRYPTO_KEY_BYTES])
{
    uint8_t sub[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    if (!out || !in || !key)
        return -1;
    seal_key(sub, key);
    randombytes_buf(out, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                                               NULL, in, len, NULL, 0, NULL, out, sub);
    sodium_memzero(sub, sizeof sub);
    return 0;
}

int crypto_unseal(void *out, const uint8_t *in, size_t len, const uint8_t key[CRYPTO_KEY_BYTES])
{
    uint8_t sub[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    int rc;
    if (!out || !in || !key || len < CRYPTO_SEAL_OVERHEAD)
        return -1;
    seal_key(sub, key);
    rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, NULL, NULL, in + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
        len - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, NULL, 0, in, sub);
    sodium_memzero(sub, sizeof sub);
    return rc == 0 ? 0 : -1;
}

int crypto_kx_keypair(uint8_t pub[CRYPTO_KX_PUBLIC_BYTES], uint8_t secret[CRYPTO_KX_SECRET_BYTES])
{
    /* crypto_box's keys are X25519 (crypto_scalarmult_base of the secret). */
    return crypto_box_keypair(pub, secret);
}
