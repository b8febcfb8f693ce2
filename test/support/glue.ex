defmodule BeamAlloc.Test.Glue do
  @moduledoc false
  # The NIF glue beyond the guide (test/nifs/glue_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "glue_nif",
    stubs: ~w(allocator_is_raw/0 allocator_is_raw_dirty_cpu/0
              allocator_is_raw_dirty_io/0 allocator_in_leak_check/0
              raw_allocator_is_raw/0 raw_uses_allocator/0 alloc_aligned/3
              sized_alloc/3 failing_alloc/1 allocator_is_custom/0
              custom_alloc/1 custom_alloc_dirty/1 composed_clean/1
              composed_leaky/1 uint_list/1 raise_exception/2 error_tuple/1
              current_function/0 raw_current_function/0 take_reports/0
              current_function_of/1 current_function_of/2)
end
