defmodule BeamAlloc.ResourceParentTest do
  # A resource made over another resource's allocator (a request's arena
  # over a connection's GPA): the parent's term may go first, or the
  # parent be released, and the child lives on. Each scenario in a VM of
  # its own: a parent torn down under its child crashed the VM.
  use ExUnit.Case, async: true

  @moduletag timeout: 300_000

  for {name, call} <- [
        {"a child outlives its parent's term; the parent goes with it", "parent_dropped(20)"},
        {"a chain of three outlives its first two terms", "chain_dropped(20)"},
        {"a parent released under a live child keeps the child's memory until it goes",
         "parent_released(20)"},
        {"a parent released after its child gives its memory back at once",
         "child_released_first()"},
        {"a child of a released parent is refused, and reported", "child_of_released()"},
        {"a chain of 100 000 released down from its last", "released_chain(100_000)"}
      ] do
    test name do
      {out, status} =
        BeamAlloc.Test.ChildVm.run("BeamAlloc.Test.ResourceParentScenarios.#{unquote(call)}", 120)

      assert status == 0, out
    end
  end
end
