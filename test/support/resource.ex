defmodule BeamAlloc.Test.Resource do
  @moduledoc false
  # Resource-scoped allocators (test/nifs/resource_nif.c). Blocks are named
  # by slot numbers in the resource's own table.
  use BeamAlloc.Test.NifModule,
    nif: "resource_nif",
    stubs:
      ~w(new/1 new_raw/1 new_here/1 new_here_checked/1 new_here_scratch/1 new_failing/2 new_child/2 new_bare_child/2 new_cycle/1 cross_cycle/0 alloc/2 alloc_checked/2 write/4
              read/4 resize/3 free/2 aligned/3 release/1 new_hooked/1 hook_runs/0 busy_at_gc/2 join_busy/0 pool_at_gc/2 pool_late/0 hook_after_call/2
              set_hook_again/1
              calls_after_release/1 usage/1 live_count/0 is_resource/1
              pin_across_release/2 keep/1 drop_kept/0 new_dropped/1
              dead_allocator/0 churn/3 churn_dirty/3 take_reports/0 pin_forgotten/1
              overrun_torn_down/1)

  # This library's holdings (beam_alloc_testing_nif:holdings/0, what
  # beam_alloc_collector reads), summed over its rows: {held, live, ops}.
  def holdings do
    library = Atom.to_string(__MODULE__)

    for {^library, h, l, o} <- :beam_alloc_testing_nif.holdings(), reduce: {0, 0, 0} do
      {h0, l0, o0} -> {h0 + h, l0 + l, o0 + o}
    end
  end
end

defmodule BeamAlloc.Test.ResourcePlain do
  @moduledoc false
  # The same feature from a module using plain ERL_NIF_INIT and
  # beam_resource_init (test/nifs/resource_plain_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "resource_plain_nif",
    stubs: ~w(new/0 alloc/2 is_resource/1 live_count/0)
end
