/* crypto.h - every use of libsodium in tokend: password hashes (Argon2id),
 * random tokens, keyed token hashes, session keys and base64. Nothing else calls
 * libsodium, so the choices below are made in one place.
 * Functions return 0 on success and -1 on error, like libsodium's. */
#ifndef TOKEND_CRYPTO_H
#define TOKEND_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define CRYPTO_TOKEN_BYTES 32       /* 256-bit tokens */
#define CRYPTO_TOKEN_TEXTLEN 44     /* base64url, no padding: 43 chars + NUL */
#define CRYPTO_HASH_BYTES 32        /* keyed BLAKE2b of a token */
#define CRYPTO_KEY_BYTES 32         /* the data directory's token-hash key */
#define CRYPTO_PWHASH_STRBYTES 128  /* crypto_pwhash_STRBYTES */
#define CRYPTO_PASSWORD_MAX 1024
#define CRYPTO_AREA_MAX ((size_t)64 << 20)  /* the largest Argon2id memory kept for reuse (crypto.c) */
#define CRYPTO_AREAS_MAX 64                  /* hashes at once that get a kept area */

/* A hash's cost. Argon2id: passes and bytes. bcrypt (imported accounts,
 * upgraded to Argon2id at their next login): mem 0, ops the log2 rounds. */
typedef struct {
    unsigned long long ops;  /* Argon2id passes (t); bcrypt: the cost (log2 rounds) */
    size_t mem;              /* bytes (m); 0 for bcrypt */
} crypto_pwcost;

#define CRYPTO_PWCOST_DEFAULT_OPS 2      /* OWASP's Argon2id minimum: t=2, m=19 MiB */
#define CRYPTO_PWCOST_DEFAULT_MEM_MIB 19
#define CRYPTO_PWCOST_DEFAULT \
    ((crypto_pwcost){CRYPTO_PWCOST_DEFAULT_OPS, (size_t)CRYPTO_PWCOST_DEFAULT_MEM_MIB << 20})

int crypto_init(void);

/* Argon2id hash string of a password (out: CRYPTO_PWHASH_STRBYTES); a bcrypt
 * one ($2b$) for a bcrypt cost (mem 0): only decoys of bcrypt accounts. */
int crypto_password_hash(char *out, const char *password, size_t len, crypto_pwcost cost);
/* 0 when the password matches the hash string, -1 otherwise. The hash is
 * Argon2id, or bcrypt ($2b$ or $2y$) as an import may have kept it. */
int crypto_password_verify(const char *hash, const char *password, size_t len);
/* 1 when a hash should be made again at `cost` while the password (len
 * bytes) is at hand: an Argon2id one weaker than `cost` in passes or memory
 * (a stronger one, an import's, is kept), a bcrypt one (upgraded to
 * Argon2id) unless the password is longer than bcrypt reads (the bytes past
 * 72 were never checked: hashing them would lock out the true password).
 * 0 if not, -1 if invalid. */
#define CRYPTO_BCRYPT_PASSWORD_MAX 72
int crypto_password_needs_rehash(const char *hash, crypto_pwcost cost, size_t len);
/* The cost a hash string was made with; -1 unless it is an Argon2id or a
 * bcrypt ($2b$, $2y$) hash. */
int crypto_password_cost(const char *hash, crypto_pwcost *cost);
/* Unmaps the kept Argon2id areas (crypto.c) that no hash has used for
 * idle_s seconds (0: every one not in use). */
void crypto_area_trim(unsigned idle_s);
/* The bytes of Argon2id memory kept for the next hashes. */
size_t crypto_area_bytes(void);
/* Argon2id work done by crypto_password_verify in this process, in
 * KiB-passes (t x m): what a test counts to compare two paths' hash cost
 * without timing them. */
unsigned long long crypto_password_work(void);
/* 1 when `hash` is a well-formed password hash this build verifies
 * (Argon2id, bcrypt $2b$ / $2y$) at a cost within these bounds: what an
 * import may keep as it is. A bcrypt string must be canonical (libxcrypt
 * rebuilds the salt's and the hash's spare bits: another spelling never
 * verifies). A cost past the bounds would take minutes to days a check,
 * for the account and for the decoys of unknown names drawn to it. */
#define CRYPTO_BCRYPT_COST_MAX 16
#define CRYPTO_PWHASH_OPS_MAX 100
#define CRYPTO_PWHASH_MEM_MAX ((size_t)4096 << 20)
#define CRYPTO_PWHASH_LANES_MAX 16
int crypto_password_hash_valid(const char *hash);
/* Whether a cost is within the bounds above (the decoys take no other). */
int crypto_password_cost_ok(crypto_pwcost cost);
/* Fills `out` with the parameters of a hash ("argon2id m=19456 t=2 p=1",
 * "bcrypt cost=12"), no secret. */
int crypto_password_describe(const char *hash, char *out, size_t len);

/* A new random token: raw bytes and their base64url text. */
int crypto_token_new(uint8_t raw[CRYPTO_TOKEN_BYTES], char text[CRYPTO_TOKEN_TEXTLEN]);
/* Decodes a token's text; -1 unless it is exactly a token's length. */
int crypto_token_parse(uint8_t raw[CRYPTO_TOKEN_BYTES], const char *text, size_t len);
/* Keyed BLAKE2b of a token: what the store keeps instead of the token. */
int crypto_token_hash(uint8_t out[CRYPTO_HASH_BYTES], const uint8_t raw[CRYPTO_TOKEN_BYTES],
                      const uint8_t key[CRYPTO_KEY_BYTES]);
/* crypto_token_parse and crypto_token_hash in one, for a token's text (len
 * characters): -1 unless it is a token. The bytes are decoded into the
 * hash's own state, which is wiped: the caller has no copy to wipe. */
int crypto_token_text_hash(uint8_t out[CRYPTO_HASH_BYTES], const char *text, size_t len,
                           const uint8_t key[CRYPTO_KEY_BYTES]);
/* 1 while crypto_token_hash takes its one-compression way (see crypto.c). */
int crypto_token_hash_fast(void);

void crypto_random(void *buf, size_t len);
/* A 16-byte BLAKE2b digest keyed with `key`, for table keys that must not
 * hold the text they stand for, nor be chosen by whoever sends that text. */
void crypto_digest(uint8_t out[16], const void *in, size_t len, const uint8_t key[CRYPTO_KEY_BYTES]);
/* Random key of `len` bytes as standard base64 into out (outlen >= 4*len/3+4). */
int crypto_random_base64(char *out, size_t outlen, size_t len);
/* Base64, for the wire forms (bytes fields in JSON, grpc-web-text) as for
 * tokens. Decoding is strict: a bad character, stray bits or a wrong length
 * fail; `ignore` (may be NULL) lists characters skipped anywhere. */
typedef enum {
    CRYPTO_BASE64,               /* standard alphabet, padded */
    CRYPTO_BASE64_NOPAD,         /* standard alphabet, no padding */
    CRYPTO_BASE64URL_NOPAD       /* URL-safe alphabet, no padding */
} crypto_base64_variant;
/* Bytes the text of `len` bytes takes, its NUL included. */
size_t crypto_base64_size(size_t len, crypto_base64_variant v);
/* Writes the text of in and a NUL into out (outlen >= crypto_base64_size). */
int crypto_base64_encode(char *out, size_t outlen, const void *in, size_t len,
                         crypto_base64_variant v);
/* Decodes in (len characters) into out (at most outcap bytes); *out_len gets the count. */
int crypto_base64_decode(void *out, size_t outcap, const char *in, size_t len, const char *ignore,
                         size_t *out_len, crypto_base64_variant v);

/* Sealing (XChaCha20-Poly1305 under a subkey of `key`) for the few secrets
 * that must come back out, such as push tokens for the push service. */
#define CRYPTO_SEAL_OVERHEAD 40   /* 24-byte nonce + 16-byte tag */
int crypto_seal(uint8_t *out, const void *in, size_t len, const uint8_t key[CRYPTO_KEY_BYTES]);
/* out gets len - CRYPTO_SEAL_OVERHEAD bytes; -1 if forged or damaged. */
int crypto_unseal(void *out, const uint8_t *in, size_t len, const uint8_t key[CRYPTO_KEY_BYTES]);

/* An X25519 key pair (an app's: the public half goes to clients). */
#define CRYPTO_KX_PUBLIC_BYTES 32
#define CRYPTO_KX_SECRET_BYTES 32
int crypto_kx_keypair(uint8_t pub[CRYPTO_KX_PUBLIC_BYTES], uint8_t secret[CRYPTO_KX_SECRET_BYTES]);

/* Zeroes memory the compiler may not optimise away (passwords, keys). */
void crypto_wipe(void *buf, size_t len);
/* free() of heap memory that may hold a secret (a request's password, in
 * jansson's or protobuf-c's copies): every byte of the block is wiped
 * first. NULL is ignored. */
void crypto_free_wiped(void *p);
/* Constant-time equality of two byte strings of the same length: 0 if equal. */
int crypto_equal(const void *a, const void *b, size_t len);

#endif
