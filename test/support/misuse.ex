defmodule BeamAlloc.Test.Misuse do
  @moduledoc false
  # One NIF per kind of misuse (test/nifs/misuse_nif.c); reports go to
  # BeamAlloc.Reporter. double_free_opted raises because of the option here.
  use BeamAlloc.Nif,
    otp_app: :beam_alloc,
    library: "misuse_nif",
    nifs: [double_free_opted: [raise_on_misuse: true]]

  use BeamAlloc.Test.NifModule,
    stubs: ~w(double_free/0 msize_after_free/0 write_past_end/0 wrong_length/0
              wrong_alignment/0 foreign_free/0 write_after_free/0
              large_double_free/0 large_write_past_end/0
              large_wrong_length/0 large_write_after_free/0
              double_free_and_badarg/0 double_free_plain/0
              double_free_raising/0 double_free_opted/0 double_free_on_failure/0 double_free_and_leak_on_failure/0
              checked_leak_on_failure/0 checked_many_leaks_on_failure/1
              checked_leak_past_listed/0
              leak_and_bad_free/0
              leak_deep/0 leak_inlined/0 impossible_free/0 nested_outer/0
              thread_double_free/0 thread_foreign_free/0 branch_free/1
              keep_gpa_block/1 free_kept_block_here/0
              free_kept_block_rightly/0 raw_double_free/0 copy_state/0 raw_wrong_length_free/0 raw_mfree_sized/0
              raw_free_then_reuse/0 raw_free_after_realloc/0
              raw_own_double_free/0 forget_kept_block/0
              large_aligned_double_free/0 large_free_at_8/0 large_free_at_16/0
              large_remap_at_8/0 mfree_twice/0 malloc_overflow/0
              keep_malloc_block/0 free_kept_malloc_block/0 waits_ran_out/0)
end

defmodule BeamAlloc.Test.TwinMisuse do
  @moduledoc false
  # A library with the same base name as Misuse's, misuse_nif.so, in
  # another directory (test/nifs/twin/misuse_nif.c -> priv/twin/).
  use BeamAlloc.Nif, otp_app: :beam_alloc, library: "twin/misuse_nif"

  use BeamAlloc.Test.NifModule,
    stubs: ~w(twin_double_free/0)
end
