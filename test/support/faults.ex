defmodule BeamAlloc.Test.Faults do
  @moduledoc false
  # NIFs for BeamAlloc.Testing.check_all_allocation_failures/2, correct and
  # buggy ones (test/nifs/faults_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "faults_nif",
    stubs: ~w(correct/1 correct_dirty/1 correct_raising/0 many/1 leaky_on_failure/0
              leak_all_on_failure/1
              swallows/0 nondeterministic/0 reset_nondeterministic/0 grow/0 grow_gpa/0
              reshape_leaky/0 reshape_leaky_gpa/0 leave_behind/0 grow_left_behind/0
              keep_then_shrink/0 keep_then_shrink_gpa/0 free_in_next_call/0
              scratch_work/0 checked_leaky/0 buffer_new/0 buffer_grow/1
              buffers_freed/0 mbuffer_new/0 mbuffer_size/1 mbuffers_freed/0
              forged_new/0 forged_size/1 gmbuffer_new/0
              gmbuffer_free_inside/1 gbuffer_new/0 gbuffer_grow/1 gbuffer_grow_scratch/1 gbuffer_grow_raw/1
              gbuffer_grow_threaded/1
              gbuffer_scribble/0 gbuffer_free/1
              kbuffer_new/0 kbuffer_free/1 kbuffer_grow_wrong/1 kbuffer_leaky_scratch/1
              kbuffer_renew_checked/1 kbuffer_grow_kept/1 kbuffer_new_fixed/0 rotating_work/0
              allocator_is_raw/0 take_reports/0
              sized_at_guarded_start/0 uses_null/1 uses_null/2 uses_null_via/1 uses_null_dirty/1
              hops_to_null/1 hops_to_null_dirty/1 uses_null_in_thread/0 uses_null_in_callback/0 uses_null_in_body/0 aborts/0
              exits_on_null/0
              divides/1 sends_itself/1 install_reporter/0 swap_segv/0 restore_segv/0
              chain_segv/0)

  # (A name ~w cannot hold: the crash note writes it quoted.)
  def unquote(:"uses null")(_tag), do: :erlang.nif_error(:not_loaded)

  # uses_null_long_name's (faults_nif.c): too long for the crash note.
  @long_name String.to_atom(String.duplicate("\\", 156) <> "a\u00c3\u00a9z")
  def long_name, do: @long_name

  def unquote(@long_name)(_tag), do: :erlang.nif_error(:not_loaded)

  # uses_null_escapes_name's: too long too, in escapes of 4 bytes.
  @escapes_name String.to_atom(String.duplicate("\u0001", 80))
  def escapes_name, do: @escapes_name

  def unquote(@escapes_name)(_tag), do: :erlang.nif_error(:not_loaded)
end
