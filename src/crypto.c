/* crypto.c - libsodium behind the small API of crypto.h.
 *
 * Tokens are 256 random bits, shown to clients as unpadded base64url and
 * kept in the store only as a BLAKE2b hash keyed with the data directory's
 * secret key: a copy of the database gives no usable token, and a lookup
 * by hash leaks nothing about other tokens through timing. */
#define _GNU_SOURCE
#include <crypt.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sodium.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include "crypto.h"

/* --- Argon2id work areas, kept from one hash to the next ---------------------
 * libsodium maps the m bytes of every Argon2id hash afresh and unmaps them
 * after, so the kernel faults in and zeroes 19 MiB, ~4,900 pages, for each
 * login: a third of the hash's time. So the process keeps the areas hashes
 * used, one per hash running at once, and lends them out: while a thread is
 * in crypto_pwhash_str or crypto_pwhash_str_verify, libsodium's map of
 * exactly that hash's size (`want`) is served from a free area big enough,
 * and its unmap gives it back; any other map or unmap, by any code or
 * thread, goes to the kernel. (If a libsodium asked for another size, it
 * would simply get the kernel's pages again: slower, not wrong.) Argon2
 * writes every block before it reads it, so an area needs no zeroing before
 * a hash; it is wiped after one, because what a hash leaves there would test
 * guesses of that password cheaply. Areas are left out of core dumps, and
 * unmapped once idle (crypto_area_trim; the server's purger calls it). */
typedef struct {
    void *base;
    size_t len;
    int busy;
    uint64_t idle_since;   /* CLOCK_MONOTONIC ns */
} area;
static area areas[CRYPTO_AREAS_MAX];
static pthread_mutex_t areas_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread struct {
    size_t want;   /* the size libsodium maps while this thread hashes; 0 otherwise */
    area *a;       /* the area lent to that hash */
    int lent;      /* libsodium has it now */
} hashing;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* libsodium's calls to mmap and munmap bind to these: the executable's
 * definitions come before libc's. Only where SYS_mmap takes mmap's own
 * arguments; elsewhere no area is lent. */
#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
static void *kernel_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

/* A free area of at least len bytes, made busy: the smallest that fits,
 * else a free one too small, or an empty slot, (re)mapped to len: the
 * process keeps as many areas as hashes ran at once, each of the largest
 * size they needed. NULL if all are busy, or no memory. */
static area *area_take(size_t len)
{
    area *best = NULL, *spare = NULL;
    pthread_mutex_lock(&areas_lock);
    for (size_t i = 0; i < CRYPTO_AREAS_MAX; i++) {
        area *a = &areas[i];
        if (a->busy)
            continue;
        if (a->base && a->len >= len && (!best || a->len < best->len))
            best = a;
        else if (!spare || (!spare->base && a->base))
            spare = a;   /* one too small first (it goes), else an empty slot */
    }
    if (!best && spare) {
        if (spare->base)
            syscall(SYS_munmap, spare->base, spare->len);
        spare->base = kernel_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        spare->len = len;
        if (spare->base == MAP_FAILED)
            spare->base = NULL, spare->len = 0;
        else
            madvise(spare->base, len, MADV_DONTDUMP), best = spare;
    }
    if (best)
        best->busy = 1;
    pthread_mutex_unlock(&areas_lock);
    return best;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (!hashing.want || len != hashing.want || hashing.lent || addr || fd != -1 ||
        prot != (PROT_READ | PROT_WRITE) ||
        (flags & (MAP_ANONYMOUS | MAP_PRIVATE | MAP_SHARED | MAP_FIXED)) != (MAP_ANONYMOUS | MAP_PRIVATE))
        return kernel_mmap(addr, len, prot, flags, fd, off);
    if (!hashing.a && !(hashing.a = area_take(len)))
        return kernel_mmap(addr, len, prot, flags, fd, off);
    hashing.lent = 1;
    return hashing.a->base;
}

int munmap(void *addr, size_t len)
{
    if (hashing.lent && addr == hashing.a->base && len == hashing.want) {
        hashing.lent = 0;
        return 0;
    }
    return (int)syscall(SYS_munmap, addr, len);
}
#endif

/* Before libsodium's Argon2id call: the bytes a hash of `mem` bytes maps
 * (libsodium: mem / 1024 blocks of 1 KiB, at least 8, a multiple of 4 with
 * one lane), which mmap above serves from an area. */
static void area_lend(size_t mem)
{
    if (mem && mem <= CRYPTO_AREA_MAX)
        hashing.want = (mem / 1024 < 8 ? 8 : mem / 1024 / 4 * 4) * 1024;
}

/* After it, whatever it answered: the area it had is wiped and given back. */
static void area_return(void)
{
    area *a = hashing.a;
    if (a) {
        sodium_memzero(a->base, hashing.want);
        pthread_mutex_lock(&areas_lock);
        a->busy = 0;
        a->idle_since = now_ns();
        pthread_mutex_unlock(&areas_lock);
    }
    hashing.a = NULL;
    hashing.lent = 0;
    hashing.want = 0;
}

void crypto_area_trim(unsigned idle_s)
{
    uint64_t now = now_ns();
    pthread_mutex_lock(&areas_lock);
    for (size_t i = 0; i < CRYPTO_AREAS_MAX; i++) {
        area *a = &areas[i];
        if (a->base && !a->busy && now - a->idle_since >= (uint64_t)idle_s * 1000000000u) {
            syscall(SYS_munmap, a->base, a->len);
            a->base = NULL, a->len = 0;
        }
    }
    pthread_mutex_unlock(&areas_lock);
}

size_t crypto_area_bytes(void)
{
    size_t kept = 0;
    pthread_mutex_lock(&areas_lock);
    for (size_t i = 0; i < CRYPTO_AREAS_MAX; i++)
        kept += areas[i].len;
    pthread_mutex_unlock(&areas_lock);
    return kept;
}

int crypto_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

/* --- bcrypt, for imported accounts (libxcrypt's crypt_rn) ---------------------
 * "$2b$" or "$2y$", a two-digit cost, "$", 53 characters of bcrypt's base64. */
#define BCRYPT_LEN 60

static int bcrypt_cost(const char *hash)
{
    static const char abc[] =
        "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    if (!hash || strlen(hash) != BCRYPT_LEN || hash[0] != '$' || hash[1] != '2' ||
        (hash[2] != 'b' && hash[2] != 'y') || hash[3] != '$' || hash[4] < '0' || hash[4] > '3' ||
        hash[5] < '0' || hash[5] > '9' || hash[6] != '$' || strspn(hash + 7, abc) != 53)
        return -1;
    int cost = (hash[4] - '0') * 10 + hash[5] - '0';
    return cost >= 4 && cost <= 31 ? cost : -1;
}

/* 0 when password matches the bcrypt hash. crypt_rn's work area is 32 KiB:
 * on the heap, not a worker's stack. */
static int bcrypt_verify(const char *hash, const char *password, size_t len)
{
    struct crypt_data *cd;
    char pw[CRYPTO_PASSWORD_MAX + 1];
    int rc = -1;
    if (memchr(password, '\0', len) || !(cd = calloc(1, sizeof *cd)))
        return -1;   /* bcrypt reads a C string: a NUL would cut the password */
    memcpy(pw, password, len);
    pw[len] = '\0';
    const char *out = crypt_rn(pw, hash, cd, sizeof *cd);
    if (out && strlen(out) == BCRYPT_LEN)
        rc = crypto_equal(out, hash, BCRYPT_LEN);
    sodium_memzero(pw, sizeof pw);
    sodium_memzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

static int bcrypt_hash(char *out, const char *password, size_t len, unsigned cost)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE], pw[CRYPTO_PASSWORD_MAX + 1], rnd[16];
    struct crypt_data *cd;
    int rc = -1;
    if (memchr(password, '\0', len) || !(cd = calloc(1, sizeof *cd)))
        return -1;
    randombytes_buf(rnd, sizeof rnd);
    memcpy(pw, password, len);
    pw[len] = '\0';
    const char *h = NULL;
    if (crypt_gensalt_rn("$2b$", cost, rnd, sizeof rnd, setting, sizeof setting))
        h = crypt_rn(pw, setting, cd, sizeof *cd);
    if (h && bcrypt_cost(h) == (int)cost && strlen(h) < CRYPTO_PWHASH_STRBYTES) {
        strcpy(out, h);
        rc = 0;
    }
    sodium_memzero(pw, sizeof pw);
    sodium_memzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

int crypto_password_hash(char *out, const char *password, size_t len, crypto_pwcost cost)
{
    if (!out || !password || len > CRYPTO_PASSWORD_MAX)
        return -1;
    if (cost.mem == 0)
        return cost.ops >= 4 && cost.ops <= 31 ? bcrypt_hash(out, password, len, (unsigned)cost.ops)
                                               : -1;
    area_lend(cost.mem);
    int rc = crypto_pwhash_str(out, password, len, cost.ops, cost.mem);
    area_return();
    return rc;
}

static _Atomic unsigned long long password_work;

int crypto_password_cost(const char *hash, crypto_pwcost *cost)
{
    unsigned m, t, p;
    int b = bcrypt_cost(hash);
    if (b >= 0) {
        cost->ops = (unsigned)b;
        cost->mem = 0;
        return 0;
    }
    const char *params = hash ? strstr(hash, "$m=") : NULL;
    if (!params || strncmp(hash, "$argon2id$", 10) != 0 ||
        sscanf(params, "$m=%u,t=%u,p=%u", &m, &t, &p) != 3)
        return -1;
    cost->ops = t;
    cost->mem = (size_t)m * 1024;
    return 0;
}

int crypto_password_cost_ok(crypto_pwcost c)
{
    if (c.mem == 0)
        return c.ops >= 4 && c.ops <= CRYPTO_BCRYPT_COST_MAX;
    return c.ops >= crypto_pwhash_OPSLIMIT_MIN && c.ops <= CRYPTO_PWHASH_OPS_MAX &&
           c.mem >= crypto_pwhash_MEMLIMIT_MIN && c.mem <= CRYPTO_PWHASH_MEM_MAX;
}

/* The 22nd salt character carries 2 bits, the 31st hash character 4: the
 * rest must be zero, as libxcrypt writes them. */
static int bcrypt_canonical(const char *hash)
{
    static const char abc[] =
        "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const char *s = strchr(abc, hash[28]), *h = strchr(abc, hash[59]);
    return s && h && (s - abc) % 16 == 0 && (h - abc) % 4 == 0;
}

int crypto_password_hash_valid(const char *hash)
{
    crypto_pwcost c;
    unsigned m, t, p;
    if (!hash || crypto_password_cost(hash, &c) != 0 || !crypto_password_cost_ok(c))
        return 0;
    if (c.mem == 0)
        return bcrypt_canonical(hash);
    /* libsodium answers -1 for a string it cannot parse as Argon2id. */
    return strlen(hash) < CRYPTO_PWHASH_STRBYTES &&
           sscanf(strstr(hash, "$m="), "$m=%u,t=%u,p=%u", &m, &t, &p) == 3 && p >= 1 &&
           p <= CRYPTO_PWHASH_LANES_MAX && crypto_pwhash_str_needs_rehash(hash, c.ops, c.mem) == 0;
}

unsigned long long crypto_password_work(void)
{
    return password_work;
}

int crypto_password_verify(const char *hash, const char *password, size_t len)
{
    crypto_pwcost cost = {0, 0};
    if (!hash || !password || len > CRYPTO_PASSWORD_MAX)
        return -1;
    if (bcrypt_cost(hash) >= 0)
        return bcrypt_verify(hash, password, len);
    if (crypto_password_cost(hash, &cost) == 0)
        password_work += cost.ops * (cost.mem / 1024);
    area_lend(cost.mem);   /* 0 (no area) if the cost is not readable */
    int rc = crypto_pwhash_str_verify(hash, password, len);
    area_return();
    return rc == 0 ? 0 : -1;
}

int crypto_password_needs_rehash(const char *hash, crypto_pwcost cost, size_t len)
{
    crypto_pwcost c;
    if (!hash || crypto_password_cost(hash, &c) != 0)
        return -1;
    if (c.mem == 0)
        return len <= CRYPTO_BCRYPT_PASSWORD_MAX &&
               !(cost.mem == 0 && cost.ops == c.ops);
    if (crypto_pwhash_str_needs_rehash(hash, c.ops, c.mem) == -1)
        return -1;   /* not a string libsodium reads */
    return c.ops < cost.ops || c.mem < cost.mem;
}

int crypto_password_describe(const char *hash, char *out, size_t len)
{
    crypto_pwcost c;
    if (crypto_password_cost(hash, &c) != 0)
        return -1;
    if (c.mem == 0)
        snprintf(out, len, "bcrypt cost=%llu (Argon2id at the next login)", c.ops);
    else
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

/* Constant-time comparisons of bytes (0xFF when true, else 0), as in
 * libsodium's base64 code: a token's text is a secret, so decoding it
 * must not branch or index on its characters. */
#define CT_EQ(x, y) ((((0U - ((unsigned)(x) ^ (unsigned)(y))) >> 8) & 0xFF) ^ 0xFF)
#define CT_GT(x, y) ((((unsigned)(y) - (unsigned)(x)) >> 8) & 0xFF)
#define CT_GE(x, y) (CT_GT(y, x) ^ 0xFF)
#define CT_LE(x, y) CT_GE(y, x)

/* Decodes the 43 characters into raw; returns non-zero if any is outside
 * the alphabet or the last one's 2 spare bits are set (raw is then
 * garbage). Branch-free per character. */
#ifdef __SSE2__
static unsigned b64url_decode(const char *text, uint8_t raw[CRYPTO_TOKEN_BYTES])
{
    char in[48];
    unsigned bad = 0;
    memcpy(in, text, 43);
    memset(in + 43, 'A', 5);   /* value 0 */
    for (int i = 0; i < 48; i += 16) {
        __m128i c = _mm_loadu_si128((const __m128i *)(in + i));
        /* signed compares: bytes >= 0x80 are negative and in no range */
#define RANGE(lo, hi) _mm_and_si128(_mm_cmpgt_epi8(c, _mm_set1_epi8((lo) - 1)), \
                                    _mm_cmpgt_epi8(_mm_set1_epi8((hi) + 1), c))
        __m128i up = RANGE('A', 'Z'), lo = RANGE('a', 'z'), dg = RANGE('0', '9');
        __m128i dash = _mm_cmpeq_epi8(c, _mm_set1_epi8('-'));
        __m128i us = _mm_cmpeq_epi8(c, _mm_set1_epi8('_'));
#undef RANGE
        __m128i v = _mm_or_si128(
            _mm_or_si128(_mm_and_si128(up, _mm_sub_epi8(c, _mm_set1_epi8('A'))),
                         _mm_and_si128(lo, _mm_sub_epi8(c, _mm_set1_epi8('a' - 26)))),
            _mm_or_si128(_mm_and_si128(dg, _mm_add_epi8(c, _mm_set1_epi8(52 - '0'))),
                         _mm_or_si128(_mm_and_si128(dash, _mm_set1_epi8(62)),
                                      _mm_and_si128(us, _mm_set1_epi8(63)))));
        __m128i ok = _mm_or_si128(_mm_or_si128(up, lo), _mm_or_si128(dg, _mm_or_si128(dash, us)));
        bad |= (unsigned)_mm_movemask_epi8(ok) ^ 0xFFFFu;
        /* The values are closed up in the register, none left in memory:
         * bytes a, b to a << 6 | b in 16 bits, then two of those to the
         * 24 bits of four characters in 32 (a multiply-add). */
        __m128i p = _mm_or_si128(_mm_and_si128(_mm_slli_epi16(v, 6), _mm_set1_epi16(0x0FC0)),
                                 _mm_srli_epi16(v, 8));
        __m128i q = _mm_madd_epi16(p, _mm_set1_epi32(0x00011000));
        for (int j = 0; j < 4; j++, q = _mm_srli_si128(q, 4)) {
            uint32_t x = (uint32_t)_mm_cvtsi128_si32(q);
            int g = i / 4 + j;
            if (g < 10) {
                /* its 3 bytes, high first; the 4th is the next group's first */
                uint32_t be = __builtin_bswap32(x << 8);
                memcpy(raw + 3 * g, &be, 4);
            } else if (g == 10) {
                /* 3 characters (the 4th is padding) for the last 2 bytes */
                raw[30] = (uint8_t)(x >> 16);
                raw[31] = (uint8_t)(x >> 8);
                bad |= x & 0xC0;   /* the spare bits */
            }
        }
    }
    return bad;
}
#else
/* The 6 bits of a base64url character, or 0xFF for any other byte. */
static inline unsigned b64url_value(unsigned c)
{
    unsigned x = (CT_GE(c, 'A') & CT_LE(c, 'Z') & (c - 'A')) |
                 (CT_GE(c, 'a') & CT_LE(c, 'z') & (c - ('a' - 26))) |
                 (CT_GE(c, '0') & CT_LE(c, '9') & (c - ('0' - 52))) |
                 (CT_EQ(c, '-') & 62) | (CT_EQ(c, '_') & 63);
    return x | (CT_EQ(x, 0) & (CT_EQ(c, 'A') ^ 0xFF));
}

static unsigned b64url_decode(const char *text, uint8_t raw[CRYPTO_TOKEN_BYTES])
{
    uint8_t v[43];
    unsigned bad = 0;
    for (int i = 0; i < 43; i++) {
        unsigned x = b64url_value((unsigned char)text[i]);
        bad |= CT_EQ(x, 0xFF);
        v[i] = (uint8_t)x;
    }
    /* 4 characters make 3 bytes: 10 groups, then 3 characters for 2 bytes. */
    for (int g = 0; g < 10; g++) {
        uint32_t x = (uint32_t)v[4 * g] << 18 | (uint32_t)v[4 * g + 1] << 12 |
                     (uint32_t)v[4 * g + 2] << 6 | v[4 * g + 3];
        raw[3 * g] = (uint8_t)(x >> 16);
        raw[3 * g + 1] = (uint8_t)(x >> 8);
        raw[3 * g + 2] = (uint8_t)x;
    }
    uint32_t x = (uint32_t)v[40] << 12 | (uint32_t)v[41] << 6 | v[42];
    raw[30] = (uint8_t)(x >> 10);
    raw[31] = (uint8_t)(x >> 2);
    bad |= x & 3;   /* the spare bits */
    sodium_memzero(v, sizeof v);
    return bad;
}
#endif

/* Decoded here rather than by sodium_base642bin: the same strict result
 * (only the 64 characters, no padding, the last character's 2 spare bits
 * zero), constant time as well (no branch or index on a character), at a
 * tenth of the cost: every Verify decodes a token. */
int crypto_token_parse(uint8_t raw[CRYPTO_TOKEN_BYTES], const char *text, size_t len)
{
    if (!text || len != CRYPTO_TOKEN_TEXTLEN - 1)
        return -1;
    if (b64url_decode(text, raw)) {
        sodium_memzero(raw, CRYPTO_TOKEN_BYTES);
        return -1;
    }
    return 0;
}

/* Keyed BLAKE2b absorbs the key as a whole first block, so a 32-byte token
 * costs two compressions, the first the same for every token of a key
 * (a tenth of a Verify). Each thread keeps the state after that block for
 * the key it saw last and starts each token from a copy: one compression,
 * the same hash. libsodium offers no call that stops after the key block,
 * so the state is built through its layout (libsodium 1.0.18's
 * blake2b_state, as its header documents it): the chain value and counter
 * after a 129-byte update - which compresses exactly the key block - with
 * an empty buffer. The token's bytes are then put (or decoded) straight
 * into the copy's buffer, where an update would copy them, and the final
 * wipes the chain and the buffer: nothing of the token is left to wipe. A
 * self-check against crypto_generichash on a probe token, when a thread
 * takes a key, turns the shortcut off for good if the library ever lays
 * its state out otherwise or its final stops wiping. */
typedef struct {
    uint64_t h[8], t[2], f[2];
    uint8_t buf[2 * 128];
    size_t buflen;
    uint8_t last_node;
} blake2b_layout;

static atomic_int keyed_shortcut_off;

static int keyed_state(crypto_generichash_blake2b_state *out, const uint8_t key[CRYPTO_KEY_BYTES])
{
    _Static_assert(sizeof(blake2b_layout) <= sizeof(crypto_generichash_blake2b_state),
                   "libsodium's BLAKE2b state is smaller than its documented layout");
    static const uint8_t pad[129];
    crypto_generichash_blake2b_state after;
    if (crypto_generichash_blake2b_init(out, key, CRYPTO_KEY_BYTES, CRYPTO_HASH_BYTES) != 0)
        return -1;
    memcpy(&after, out, sizeof after);
    if (crypto_generichash_blake2b_update(&after, pad, sizeof pad) != 0)
        return -1;
    blake2b_layout *o = (blake2b_layout *)(void *)out, *a = (blake2b_layout *)(void *)&after;
    memcpy(o->h, a->h, sizeof o->h);
    memcpy(o->t, a->t, sizeof o->t);
    memset(o->buf, 0, sizeof o->buf);
    o->buflen = 0;
    sodium_memzero(&after, sizeof after);
    return 0;
}

/* The hash of the token whose bytes the caller put in st's buffer (where
 * blake2b_update would copy them), from a copy of the keyed state.
 * libsodium's final wipes the chain and the buffer (the self-check makes
 * sure), so nothing of the token is left in st: no wipe of it here, nor
 * of a raw copy the caller need not make. */
static int hash_from(const crypto_generichash_blake2b_state *keyed, uint8_t out[CRYPTO_HASH_BYTES],
                     crypto_generichash_blake2b_state *st)
{
    /* All but the buffer, empty in keyed: the final pads what the token
     * leaves of it before reading any. */
    memcpy(st, keyed, offsetof(blake2b_layout, buf));
    memcpy((char *)st + offsetof(blake2b_layout, buflen),
           (const char *)keyed + offsetof(blake2b_layout, buflen),
           sizeof(blake2b_layout) - offsetof(blake2b_layout, buflen));
    ((blake2b_layout *)(void *)st)->buflen = CRYPTO_TOKEN_BYTES;
    if (crypto_generichash_blake2b_final(st, out, CRYPTO_HASH_BYTES) != 0) {
        sodium_memzero(st, sizeof *st);
        return -1;
    }
    return 0;
}

static uint8_t *state_buf(crypto_generichash_blake2b_state *st)
{
    return ((blake2b_layout *)(void *)st)->buf;
}

/* 1 when every byte of `p` is zero. */
static int all_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < len; i++)
        x |= b[i];
    return x == 0;
}

/* The thread's keyed state for `key`, or NULL when the shortcut is off
 * (then hash the slow way). */
static const crypto_generichash_blake2b_state *keyed_for(const uint8_t key[CRYPTO_KEY_BYTES])
{
    static __thread crypto_generichash_blake2b_state keyed;
    static __thread uint8_t keyed_key[CRYPTO_KEY_BYTES];
    static __thread int keyed_set;
    if (atomic_load_explicit(&keyed_shortcut_off, memory_order_relaxed))
        return NULL;
    if (!keyed_set || memcmp(keyed_key, key, CRYPTO_KEY_BYTES) != 0) {
        static const uint8_t probe[CRYPTO_TOKEN_BYTES] = {1, 2, 3};
        uint8_t want[CRYPTO_HASH_BYTES], got[CRYPTO_HASH_BYTES];
        crypto_generichash_blake2b_state st;
        blake2b_layout *s = (blake2b_layout *)(void *)&st;
        keyed_set = 0;
        memcpy(state_buf(&st), probe, sizeof probe);
        /* the same hash, and the final wiped the chain and the buffer */
        if (keyed_state(&keyed, key) != 0 || hash_from(&keyed, got, &st) != 0 ||
            !all_zero(s->h, sizeof s->h) || !all_zero(s->buf, sizeof s->buf) ||
            crypto_generichash(want, sizeof want, probe, sizeof probe, key, CRYPTO_KEY_BYTES) != 0 ||
            sodium_memcmp(got, want, sizeof want) != 0) {
            atomic_store(&keyed_shortcut_off, 1);
            sodium_memzero(&keyed, sizeof keyed);
            return NULL;
        }
        memcpy(keyed_key, key, CRYPTO_KEY_BYTES);
        keyed_set = 1;
    }
    return &keyed;
}

int crypto_token_hash(uint8_t out[CRYPTO_HASH_BYTES], const uint8_t raw[CRYPTO_TOKEN_BYTES],
                      const uint8_t key[CRYPTO_KEY_BYTES])
{
    const crypto_generichash_blake2b_state *keyed = keyed_for(key);
    crypto_generichash_blake2b_state st;
    if (!keyed)
        return crypto_generichash(out, CRYPTO_HASH_BYTES, raw, CRYPTO_TOKEN_BYTES, key,
                                  CRYPTO_KEY_BYTES);
    memcpy(state_buf(&st), raw, CRYPTO_TOKEN_BYTES);
    return hash_from(keyed, out, &st);
}

int crypto_token_text_hash(uint8_t out[CRYPTO_HASH_BYTES], const char *text, size_t len,
                           const uint8_t key[CRYPTO_KEY_BYTES])
{
    const crypto_generichash_blake2b_state *keyed;
    crypto_generichash_blake2b_state st;
    uint8_t raw[CRYPTO_TOKEN_BYTES];
    if (!text || len != CRYPTO_TOKEN_TEXTLEN - 1)
        return -1;
    if ((keyed = keyed_for(key)) != NULL) {
        if (b64url_decode(text, state_buf(&st))) {
            sodium_memzero(state_buf(&st), CRYPTO_TOKEN_BYTES);
            return -1;
        }
        return hash_from(keyed, out, &st);
    }
    if (crypto_token_parse(raw, text, len) != 0)
        return -1;
    int rc = crypto_generichash(out, CRYPTO_HASH_BYTES, raw, CRYPTO_TOKEN_BYTES, key,
                                CRYPTO_KEY_BYTES);
    sodium_memzero(raw, sizeof raw);
    return rc;
}

int crypto_token_hash_fast(void)
{
    return !atomic_load(&keyed_shortcut_off);
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
    /* libsodium 1.0.18 reads a byte past ASCII as '/' and skips a NUL as
     * an ignored character (strchr finds the terminator): neither is
     * base64, and each would let two texts decode alike. */
    for (size_t i = 0; i < len; i++)
        if (in[i] == '\0' || (unsigned char)in[i] >= 0x80)
            return -1;
    return sodium_base642bin(out, outcap, in, len, ignore, out_len, NULL, sodium_variant(v)) == 0
               ? 0 : -1;
}

int crypto_equal(const void *a, const void *b, size_t len)
{
    /* sodium_memcmp's volatile loads cost 8x this; no early exit either way.
     * Sixteen (or eight) bytes a step, the last step overlapping the one
     * before it: a token's text is compared on every Verify. */
    const uint8_t *x = a, *y = b;
    uint64_t d = 0;
    size_t i = 0;
#ifdef __SSE2__
    if (len >= 16) {
        __m128i acc = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(x + len - 16)),
                                    _mm_loadu_si128((const __m128i *)(y + len - 16)));
        for (; i + 16 < len; i += 16)
            acc = _mm_or_si128(acc, _mm_xor_si128(_mm_loadu_si128((const __m128i *)(x + i)),
                                                  _mm_loadu_si128((const __m128i *)(y + i))));
        d = (uint64_t)_mm_cvtsi128_si64(_mm_or_si128(acc, _mm_unpackhi_epi64(acc, acc)));
    } else
#endif
    if (len >= 8) {
        uint64_t u, v;
        memcpy(&u, x + len - 8, 8);
        memcpy(&v, y + len - 8, 8);
        d = u ^ v;
        for (; i + 8 < len; i += 8) {
            memcpy(&u, x + i, 8);
            memcpy(&v, y + i, 8);
            d |= u ^ v;
        }
    } else {
        for (; i < len; i++)
            d |= (uint64_t)(x[i] ^ y[i]);
    }
    /* nonzero d to -1, zero to 0, without a branch on it */
    d |= d >> 32, d |= d >> 16, d |= d >> 8;
    return (int)(1 & (((d & 0xff) - 1) >> 8)) - 1;
}

void crypto_wipe(void *buf, size_t len)
{
    sodium_memzero(buf, len);
}

void crypto_free_wiped(void *p)
{
    if (!p)
        return;
    sodium_memzero(p, malloc_usable_size(p));
    free(p);
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
