/* output.h: the script's output and qlua's own messages. Script output is buffered and handed to
 * QEMU's plugin log every QLUA_OUT_DELAY_MS by a thread of qlua's (or when 64 KiB wait), and at
 * once before anything that may end the process. qlua's messages go to a copy of stderr made at
 * load, which the guest cannot close. */
#ifndef QLUA_OUTPUT_H
#define QLUA_OUTPUT_H

#include "base.h"

#define QLUA_OUT_DELAY_MS 20

/* At install, before the script runs. */
void qlua_output_start(void);
void qlua_out_write(const char *s, size_t len);
/* Hands everything buffered to QEMU now, and flushes Lua's own stdio (print, io.write). */
void qlua_out_flush(void);
/* While a REPL request runs, the script's output goes to `to` (NULL: back to the log); returns the
 * previous destination. */
GString *qlua_out_redirect(GString *to);
/* qlua's own messages: "qlua: ..." on the private copy of stderr, after pending output. */
void qlua_report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* Starts a thread with every signal blocked: how all of qlua's threads are made. */
void qlua_blocked_thread(const char *name, GThreadFunc fn, gpointer data);
/* fork: no half-written buffer and no held output lock in the child. */
void qlua_output_fork_prepare(void);
void qlua_output_fork_parent(void);
void qlua_output_fork_child(void);

#endif
