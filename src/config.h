/* config.h - the optional configuration file of `tokend serve --config F`:
 * one "option value" per line, the serve options without their dashes
 * ("throttle-account 20"), '#' starting a comment. Options given on the
 * command line win. SIGHUP re-reads the file and applies what can change
 * without a restart: the throttle limits, max-body and deadline. */
#ifndef TOKEND_CONFIG_H
#define TOKEND_CONFIG_H

#include "tokend.h"

/* Appends the file's options to argv as "--name value" pairs, in a new
 * malloc'd array (free() it) that shares argv's strings; *owned lists the
 * strings made here (config_free()). Returns 0, or -1 with err set. */
int config_read(const char *path, int *argc, char ***argv, char ***owned, char *err,
                size_t errlen);
void config_free(char **owned);

/* Re-reads ctx->config->config_file and applies the reloadable options.
 * Returns 0, or -1 (nothing changed) with err set. */
int config_reload(tokend_ctx *ctx, char *err, size_t errlen);

/* Reloadable settings are read with these from any thread. */
size_t config_max_body(const tokend_config *cfg);
unsigned config_deadline(const tokend_config *cfg);

#endif
