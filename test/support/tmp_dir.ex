defmodule BeamAlloc.Test.TmpDir do
  @moduledoc false

  # A path of the test's own under the system's temporary directory,
  # absent at first (a caller that wants it made makes it) and removed when
  # the test ends. A plain name (make cannot take every character a test
  # name has) that no other VM's run can share: unique_integer is unique in
  # one VM only, and two suites run at once used to remove each other's.
  def path!(prefix) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "#{prefix}_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    File.rm_rf!(dir)
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end
end
