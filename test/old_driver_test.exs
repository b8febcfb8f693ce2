defmodule BeamAlloc.OldDriverTest do
  # A library copy meets a fault-injection driver of an older version (a
  # NIF built against a newer beam_alloc than the BeamAlloc.Testing that
  # checks it): the interface's later members are "added last", and a copy
  # checks the driver's size before calling them, so it takes the older
  # driver and calls only what that one has. (A copy refused every driver
  # smaller than its own struct: no check ran in it.)
  use ExUnit.Case, async: false

  alias BeamAlloc.Test.OldDriver

  for {version, what} <- [{0, "enter and leave only"}, {1, "misuse, no under"}] do
    test "a copy takes a driver with #{what}" do
      assert OldDriver.attach(unquote(version))

      try do
        assert :ok = OldDriver.call()
        assert {1, 1, 0} = OldDriver.counts()
      after
        OldDriver.detach()
      end
    end
  end
end
