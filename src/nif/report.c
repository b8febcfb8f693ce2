/*
 * Reports inside a BEAM go to the Erlang logger: as a message
 * {beam_alloc_report, Module, Line, Pid} to the process registered as
 * 'Elixir.BeamAlloc.Reporter' (started by the beam_alloc application),
 * which logs it and keeps the latest for tests. Without that process (an
 * Erlang node that did not start the application) the line goes to stderr,
 * as in the standalone build.
 *
 * The hook may run on any thread, with allocator locks held; everything
 * here allocates through ERTS only, never through beam_alloc.
 */
#include "nif_internal.h"

#include <string.h>

void beam__report_to_logger(void *user, const char *line) {
    (void)user;
    /* The calling NIF's env when there is one; NULL from threads of our
     * own, destructors and load callbacks, where ERTS accepts it. */
    ErlNifEnv *caller = beam__nif_current_env();
    ErlNifEnv *msg_env = enif_alloc_env();
    if (msg_env == NULL) {
        beam__report_to_stderr(line);
        return;
    }
    ErlNifPid pid;
    size_t len = strlen(line);
    ERL_NIF_TERM bin;
    unsigned char *data = enif_make_new_binary(msg_env, len, &bin);
    const char *module = beam__nif_module_atom();
    if (data == NULL ||
        !enif_whereis_pid(caller,
                          enif_make_atom(msg_env, "Elixir.BeamAlloc.Reporter"),
                          &pid)) {
        enif_free_env(msg_env);
        beam__report_to_stderr(line);
        return;
    }
    memcpy(data, line, len);
    /* The calling process, so that a test can take the reports its own
     * calls made (BeamAlloc.Case); undefined off a process. */
    ErlNifPid self;
    ERL_NIF_TERM from = caller != NULL && enif_self(caller, &self) != NULL
                            ? enif_make_pid(msg_env, &self)
                            : enif_make_atom(msg_env, "undefined");
    ERL_NIF_TERM msg = enif_make_tuple4(
        msg_env, enif_make_atom(msg_env, "beam_alloc_report"),
        enif_make_atom(msg_env, module[0] != '\0' ? module : "undefined"), bin,
        from);
    if (!enif_send(caller, &pid, msg_env, msg))
        beam__report_to_stderr(line);
    enif_free_env(msg_env);
}
