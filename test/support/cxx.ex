defmodule CxxNif do
  @moduledoc false
  # C++ containers on beam::allocator and beam::memory_resource
  # (test/nifs/cxx_nif.cpp).
  use BeamAlloc.Test.NifModule,
    nif: "cxx_nif",
    stubs:
      ~w(containers/1 leak/0 leak_in_containers/0 throws/0 throws_later/0 throws_text/1 grow/1 push_at/1 unguarded_push/1 null_in_body/0 null_in_lambda/0 null_in_namespace/0 take_reports/0
             throws_in_allocator/0 throws_in_allocator_checked/0 picked_body_runs/0
             overaligned/1 overaligned_caught/1 overaligned_gpa/1
             pool_vector_raw/0 pool_vector_gpa/0 shared_and_thread/0)
end
