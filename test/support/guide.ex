defmodule BeamAlloc.Test.Guide do
  @moduledoc false
  # The allocator guide's examples (test/nifs/guide_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "guide_nif",
    stubs: ~w(allocate_raw/1 raw_global_alloc/0 raw_global_free/0 c_malloc/0
              c_free/0 allocate_large_aligned/1 leaks/0 noleak/0 basic/0
              with_arena/0 take_reports/0)
end
