/* config.c - the configuration file's reload on SIGHUP. */
#include <stdio.h>
#include <string.h>
#include "config.h"
#include "log.h"
#include "options.h"

typedef struct {
    char *err;
    size_t len;
    int n;
} first_error;

static void keep_first(void *arg, const char *msg)
{
    first_error *fe = arg;
    if (fe->n++ == 0)
        snprintf(fe->err, fe->len, "%s", msg);
}

static int same(const option_values *a, const option_values *b, option_id id)
{
    if (options[id].kind == OPT_NUMBER)
        return options_num(a, id) == options_num(b, id);
    const char *x = options_text(a, id), *y = options_text(b, id);
    return x == y || (x && y && strcmp(x, y) == 0);
}

int config_reload(tokend_ctx *ctx, char *err, size_t errlen)
{
    tokend_config *cfg = ctx->config, next = *cfg;
    const option_values *start = cfg->options;
    option_values ov = {0};
    first_error fe = {err, errlen, 0};
    char restart[256] = "";
    size_t r = 0;

    if (!cfg->config_file || !start) {
        snprintf(err, errlen, "no --config file to reload");
        return -1;
    }
    /* The command line still wins over the file. */
    for (int i = 0; i < OPT_COUNT; i++)
        if (start->v[i].set && start->v[i].line == 0)
            ov.v[i] = start->v[i];
    if (options_read_file(&ov, cfg->config_file, keep_first, &fe) != 0 ||
        options_to_config(&ov, &next, keep_first, &fe) != 0) {
        options_free(&ov);
        return -1;
    }
    for (int i = 0; i < OPT_COUNT; i++)
        if ((options[i].flags & OPT_IN_FILE) && !(options[i].flags & OPT_RELOAD) &&
            !same(&ov, start, (option_id)i) && r < sizeof restart)
            r += (size_t)snprintf(restart + r, sizeof restart - r, "%s%s", r ? ", " : "",
                                  options[i].name);
    options_free(&ov);
    if (r)
        log_event(LOG_WARN, "reload", "SIGHUP: %s changed in %s: needs a restart to change",
                  restart, cfg->config_file);
    throttle_configure(ctx->throttle, next.throttle);
    cfg->throttle = next.throttle;
    __atomic_store_n(&cfg->max_body, next.max_body, __ATOMIC_RELAXED);
    __atomic_store_n(&cfg->deadline, next.deadline, __ATOMIC_RELAXED);
    log_event(LOG_INFO, "reload",
            "SIGHUP: reloaded %s (throttle-account %u, throttle-address %u, "
            "throttle-window %u, max-body %zu, deadline %u)",
            cfg->config_file, next.throttle.account, next.throttle.address,
            next.throttle.window_s, next.max_body, next.deadline);
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
