# FailureRecap prints every failure again once the suite is done, where a
# CI log's tail shows it.
ExUnit.configure(
  exclude: [:soak],
  formatters: [ExUnit.CLIFormatter, BeamAlloc.Test.FailureRecap]
)

ExUnit.after_suite(fn _ -> BeamAlloc.Test.FailureRecap.print() end)
ExUnit.start()

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
