/* config.c - the configuration file and its reload on SIGHUP. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"

int config_read(const char *path, int *argc, char ***argv, char ***owned, char *err,
                size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = *argc, first = *argc, lineno = 0;
    char **out;
    if (!f) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    if (!(out = malloc(sizeof *out * (size_t)(n + 1)))) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (n)
        memcpy(out, *argv, sizeof *out * (size_t)n);
    while (fgets(line, sizeof line, f)) {
        char name[128], value[896];
        char *hash = strchr(line, '#');
        lineno++;
        if (hash)
            *hash = '\0';
        int k = sscanf(line, " %127s %895s", name, value);
        if (k <= 0)
            continue;
        char **grown = k == 2 ? realloc(out, sizeof *out * (size_t)(n + 3)) : NULL;
        if (!grown) {
            if (k == 2)
                snprintf(err, errlen, "out of memory");
            else
                snprintf(err, errlen, "%s:%d: expected \"option value\"", path, lineno);
            out[n] = NULL;
            fclose(f);
            *owned = NULL;
            for (int i = first; i < n; i++)
                free(out[i]);
            free(out);
            return -1;
        }
        out = grown;
        size_t nl = strlen(name) + 3;
        if ((out[n] = malloc(nl)))
            snprintf(out[n], nl, "--%s", name);
        out[n + 1] = strdup(value);
        n += 2;
    }
    fclose(f);
    out[n] = NULL;
    /* opt() clears the entries it consumes: keep our own list to free. */
    *owned = calloc((size_t)(n - first + 1), sizeof **owned);
    if (*owned)
        memcpy(*owned, out + first, sizeof **owned * (size_t)(n - first));
    *argc = n;
    *argv = out;
    return 0;
}

void config_free(char **owned)
{
    for (char **p = owned; p && *p; p++)
        free(*p);
    free(owned);
}

static int parse_unsigned(const char *v, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-' || n > max)
        return -1;
    *out = n;
    return 0;
}

int config_reload(tokend_ctx *ctx, char *err, size_t errlen)
{
    tokend_config *cfg = ctx->config;
    throttle_config tc = cfg->throttle;
    size_t max_body = config_max_body(cfg);
    unsigned deadline = config_deadline(cfg);
    int argc = 0;
    char **argv = NULL, **owned = NULL;

    if (!cfg->config_file) {
        snprintf(err, errlen, "no --config file to reload");
        return -1;
    }
    if (config_read(cfg->config_file, &argc, &argv, &owned, err, errlen) != 0)
        return -1;
    for (int i = 0; i + 1 < argc; i += 2) {
        const char *name = argv[i] + 2, *v = argv[i + 1];
        unsigned long long n;
        int bad = 0;
        if (strcmp(name, "throttle-account") == 0)
            bad = parse_unsigned(v, 1000000, &n) || ((tc.account = (unsigned)n), 0);
        else if (strcmp(name, "throttle-address") == 0)
            bad = parse_unsigned(v, 1000000, &n) || ((tc.address = (unsigned)n), 0);
        else if (strcmp(name, "throttle-window") == 0)
            bad = parse_unsigned(v, 86400, &n) || n < 1 || ((tc.window_s = (unsigned)n), 0);
        else if (strcmp(name, "max-body") == 0)
            bad = parse_unsigned(v, 16 << 20, &n) || n < 64 || ((max_body = (size_t)n), 0);
        else if (strcmp(name, "deadline") == 0)
            bad = parse_unsigned(v, 3600, &n) || n < 1 || ((deadline = (unsigned)n), 0);
        else
            fprintf(stderr, "tokend: SIGHUP: %s needs a restart to change\n", name);
        if (bad) {
            snprintf(err, errlen, "%s: bad value \"%s\" for %s", cfg->config_file, v, name);
            config_free(owned);
            free(argv);
            return -1;
        }
    }
    config_free(owned);
    free(argv);
    throttle_configure(ctx->throttle, tc);
    cfg->throttle = tc;
    __atomic_store_n(&cfg->max_body, max_body, __ATOMIC_RELAXED);
    __atomic_store_n(&cfg->deadline, deadline, __ATOMIC_RELAXED);
    fprintf(stderr,
            "tokend: SIGHUP: reloaded %s (throttle-account %u, throttle-address %u, "
            "throttle-window %u, max-body %zu, deadline %u)\n",
            cfg->config_file, tc.account, tc.address, tc.window_s, max_body, deadline);
    return 0;
}

size_t config_max_body(const tokend_config *cfg)
{
    return __atomic_load_n(&cfg->max_body, __ATOMIC_RELAXED);
}

unsigned config_deadline(const tokend_config *cfg)
{
    return __atomic_load_n(&cfg->deadline, __ATOMIC_RELAXED);
}
