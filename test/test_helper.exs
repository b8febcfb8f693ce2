# FailureRecap prints every failure again once the suite is done, where a
# CI log's tail shows it.
ExUnit.configure(
  exclude: [:soak],
  formatters: [ExUnit.CLIFormatter, BeamAlloc.Test.FailureRecap]
)

ExUnit.after_suite(fn _ -> BeamAlloc.Test.FailureRecap.print() end)
ExUnit.start()

# The application's collector gives back what idle libraries hold: tests
# that measure what an instance holds would see it change under them. Off
# for the suite; test/vm_test.exs turns it on in a VM of its own.
Application.put_env(:beam_alloc, :auto_collect, false)

# Many tests check that reports name source lines, which the symbolizer
# gives only when it was built with libdw: say so once, clearly, instead of
# failing each of them on a site like "misuse_nif.so+0x3cc4".
unless BeamAlloc.Symbolizer.with_libdw?() do
  Mix.raise(
    "libdw-dev is missing: the symbolizer was built without it, so reports " <>
      "name sites as lib.so+0x.. instead of file.c:line and the tests that check " <>
      "source lines cannot pass; run scripts/ensure-deps (or make deps), " <>
      "then mix test again: the symbolizer is rebuilt with it"
  )
end
