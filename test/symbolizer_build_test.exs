defmodule BeamAlloc.SymbolizerBuildTest do
  # The symbolizer without libdw (README: "libdw-dev for reports that name
  # source lines (without it they give my_nif.so+0x1c1b offsets)"): its
  # fallback must still build, or a machine without libdw-dev cannot
  # compile beam_alloc at all. This machine has libdw, so the test asks
  # the Makefile for the build a machine without it gets (LIBDW_FLAGS
  # empty), into a directory of its own.
  use ExUnit.Case, async: true

  @root Path.expand("..", __DIR__)

  test "the symbolizer builds without libdw, and says it is without" do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_nolibdw")
    so = Path.join(dir, "priv/beam_alloc_symbolize.so")
    # (The checkout's libdw stamps stay as they are: one rewritten to say
    # no libdw relinked the checkout's own symbolizer at the next compile.)
    stamps = fn ->
      for f <- Path.wildcard(Path.join(@root, "build/**/symbolizer-libdw*")),
          do: {f, File.read!(f), File.stat!(f).mtime}
    end

    before = stamps.()

    {out, status} = make_symbolizer(dir, ["LIBDW_FLAGS=", "BUILD=#{dir}/build"])

    assert status == 0, out
    assert stamps.() == before
    assert out =~ "building the symbolizer without it"
    assert File.exists?(so)
    {syms, 0} = System.cmd("nm", ["-D", "--defined-only", so])
    assert syms =~ "nif_init"
    {undef, 0} = System.cmd("nm", ["-D", "--undefined-only", so])
    refute undef =~ "dwfl_"
  end

  # Whether the compiler finds libdw was asked as the Makefile was read:
  # two compiler runs (~45 ms) at every make, `make format` and `make
  # clean` too. Asked only when the symbolizer is linked: a compiler that
  # notes each call, its probe (the header, from standard input, and
  # -print-file-name=libdw.so) looked for.
  test "make asks the compiler about libdw only for the symbolizer" do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_libdw_probe")
    File.mkdir_p!(dir)
    log = Path.join(dir, "cc.log")
    cc = Path.join(dir, "cc")
    File.write!(cc, "#!/bin/sh\necho \"$@\" >>'#{log}'\nexec cc \"$@\"\n")
    File.chmod!(cc, 0o755)
    so = Path.join(dir, "priv/beam_alloc_symbolize.so")

    probed = fn goal ->
      File.rm(log)

      {out, status} =
        System.cmd(
          "make",
          ["-C", @root, "-n", goal, "CC=#{cc}", "MIX_APP_PATH=#{dir}"],
          env: [{"ERTS_INCLUDE_DIR", "/none"}, {"MAKEFLAGS", nil}, {"MAKELEVEL", nil}],
          stderr_to_stdout: true
        )

      assert status == 0, "make -n #{goal}: #{out}"
      File.exists?(log) and File.read!(log) =~ ~r/-x c - |libdw/
    end

    for goal <- ~w(format clean c-test), do: refute(probed.(goal), goal)
    assert probed.(so)
  end

  # The stamp that relinks the symbolizer when libdw comes or goes was one
  # for the whole build folder, holding the flags of the last link: a
  # Nerves developer switching between the host (libdw) and a board
  # (another CC, none) rewrote it at each switch, and each relinked the
  # other's symbolizer and warned again that libdw was missing (found by a
  # review). A compiler that finds no libdw (-print-file-name gives the
  # bare name back) for the board; a build folder of the test's own.
  test "switching between a compiler with libdw and one without relinks neither symbolizer" do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_libdw_switch")
    File.mkdir_p!(dir)
    board_cc = Path.join(dir, "board-cc")

    File.write!(board_cc, """
    #!/bin/sh
    for a in "$@"; do [ "$a" = -print-file-name=libdw.so ] && { echo libdw.so; exit 0; }; done
    exec cc "$@"
    """)

    File.chmod!(board_cc, 0o755)

    link = fn app, cc ->
      {out, status} = make_symbolizer(Path.join(dir, app), ["CC=#{cc}", "BUILD=#{dir}/build"])

      assert status == 0, out
      out =~ "beam_alloc_symbolize.c"
    end

    assert link.("host", "cc")
    assert link.("board", board_cc)
    refute link.("host", "cc")
    refute link.("board", board_cc)
  end

  # make of the symbolizer of app_path (its priv/), with vars.
  defp make_symbolizer(app_path, vars) do
    so = Path.join(app_path, "priv/beam_alloc_symbolize.so")

    System.cmd(
      "make",
      ["-C", @root, "--no-print-directory", so, "MIX_APP_PATH=#{app_path}" | vars],
      env: [{"MAKEFLAGS", nil}, {"MAKELEVEL", nil}],
      stderr_to_stdout: true
    )
  end
end
