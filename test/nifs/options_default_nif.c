/* The options NIFs for BeamAlloc.Test.OptionsDefaultApp, which uses
 * BeamAlloc.Nif without :otp_app (test/support/options.ex). */
#define OPTIONS_MODULE Elixir.BeamAlloc.Test.OptionsDefaultApp
#include "options_impl.h"
