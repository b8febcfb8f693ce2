defmodule BeamAlloc.Test.Mailbox do
  @moduledoc false

  # The values of the {tag, value} messages already in the calling
  # process's mailbox, oldest first, taken out of it; waits for none.
  # (What a test's hooks, handlers or processes sent it while it ran.)
  def take(tag, acc \\ []) do
    receive do
      {^tag, value} -> take(tag, [value | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end
end
