/* config.h - the reload of the configuration file on SIGHUP. The file's
 * format and its options are those of options.h (one table for the command
 * line and the file); the command line wins, at start and at each reload.
 * A reload makes the reloadable options (the throttle limits, max-body and
 * deadline) what a restart would make them, and names the others that the
 * file changed: they need a restart. */
#ifndef TOKEND_CONFIG_H
#define TOKEND_CONFIG_H

#include "tokend.h"

/* Re-reads ctx->config->config_file and applies the reloadable options.
 * Returns 0, or -1 (nothing changed) with err set to the first error. */
int config_reload(tokend_ctx *ctx, char *err, size_t errlen);

/* Reloadable settings are read with these from any thread. */
size_t config_max_body(const tokend_config *cfg);
unsigned config_deadline(const tokend_config *cfg);

#endif
