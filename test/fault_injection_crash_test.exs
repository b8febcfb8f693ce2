defmodule BeamAlloc.FaultInjectionCrashTest do
  # A NIF that does not handle a failed allocation crashes the VM: the
  # check must say which request it was failing, and where that request was
  # made, before the VM dies as it would have. Each case in a VM of its own.
  use ExUnit.Case, async: true

  @moduletag timeout: 120_000

  @faults "BeamAlloc.Test.Faults"

  # The VM's output (stderr too) and exit status: `call` evaluated by
  # :elixir, or as Erlang by erl.
  defp run_vm(:elixir, call), do: run_vm(System.find_executable("elixir"), ["-e", call])

  defp run_vm(:erlang, call) do
    run_vm(System.find_executable("erl"), ["-noshell", "-eval", call])
  end

  defp run_vm(exe, args, env \\ []) do
    paths =
      for app <- [:beam_alloc, :elixir, :logger],
          do: ["-pa", Application.app_dir(app, "ebin")]

    System.cmd("timeout", ["-s", "KILL", "60", exe | List.flatten(paths)] ++ args,
      stderr_to_stdout: true,
      env: env
    )
  end

  # A PATH without addr2line for an Erlang VM: erl's own directory, and a
  # directory with the two programs its script runs.
  defp path_without_addr2line(tmp) do
    for tool <- ~w(dirname basename),
        do: File.ln_s!(System.find_executable(tool), Path.join(tmp, tool))

    Enum.join([Path.join(:code.root_dir(), "bin"), tmp], ":")
  end

  # A new directory, removed after the test.
  defp tmp_dir(prefix) do
    tmp = BeamAlloc.Test.TmpDir.path!(prefix)
    File.mkdir_p!(tmp)
    tmp
  end

  # The source line of make_header's unchecked allocation.
  defp unchecked_line, do: BeamAlloc.Test.Reports.line_of("test/nifs/faults_nif.c", "unchecked")

  # Checking call (Elixir) crashes the VM (SIGSEGV), the note naming the
  # NIF call mfa.
  defp assert_crash_names(call, mfa) do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{call} end)
      """)

    assert status == 128 + 11, out
    assert out =~ ", in the NIF call `#{mfa}`: handle the NULL there", out
  end

  defp assert_names_the_request(out) do
    assert out =~
             "beam_alloc: the VM got SIGSEGV while check_all_allocation_failures was " <>
               "failing allocation request 1 (and every later one), which returned NULL: " <>
               "alloc of 64 bytes at faults_nif.so+0x",
           out

    assert out =~ ", in the NIF call `#{@faults}.uses_null/1`: handle the NULL there", out
  end

  # The handler ran addr2line and says its answer (where the machine has
  # addr2line: binutils comes with gcc and clang).
  defp assert_says_the_line(out) do
    if System.find_executable("addr2line"),
      do: assert_says_addr2lines_answer(out),
      else: assert_gives_the_command(out)
  end

  defp assert_says_addr2lines_answer(out) do
    assert out =~
             ~r"\nbeam_alloc: that request was made in make_header at \S*test/nifs/faults_nif\.c:#{unchecked_line()}\n",
           out

    # Not the command (any "addr2line" would also match a path holding
    # the word: a checkout under /tmp/addr2line-fix failed).
    refute out =~ "its source line:", out
  end

  # Where addr2line is not found, the handler gives the command, and the
  # command gives the line.
  defp assert_gives_the_command(out) do
    refute out =~ "that request was made in", out

    [_, lib, offset] =
      Regex.run(~r/its source line: addr2line -f -i -C -e (\S+) (0x[0-9a-f]+)\n/, out)

    if addr2line = System.find_executable("addr2line") do
      {lines, 0} = System.cmd(addr2line, ["-f", "-i", "-C", "-e", lib, offset])
      assert lines =~ ~r/make_header\n.*faults_nif\.c:#{unchecked_line()}\b/, lines
    end
  end

  test "a NIF that uses a failed allocation's NULL: the crash names the request and its line" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.uses_null(7) end)
      """)

    # Killed by SIGSEGV, as without the check's handler.
    assert status == 128 + 11, out
    assert_names_the_request(out)
    assert_says_the_line(out)
    refute out =~ "was called from", out
  end

  # A failure that ends the process with exit() (libbrotlienc's encoder
  # calls exit(1) on one) raises no signal: the VM was gone, status 1, with
  # not a word. The note is written at exit instead.
  test "a NIF that exits on a failed allocation: the note names the request at exit" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.correct(1) end)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.exits_on_null() end)
      """)

    assert status == 1, out

    assert out =~
             "beam_alloc: the VM exited (exit() was called) while " <>
               "check_all_allocation_failures was failing allocation request 0 (and every " <>
               "later one), which returned NULL: alloc of 48 bytes at faults_nif.so+0x",
           out

    assert out =~ ", in the NIF call `#{@faults}.exits_on_null/0`: the NIF, or a C library", out
    assert length(String.split(out, "beam_alloc: the VM exited")) == 2, out
  end

  # The VM's own halt calls exit() too, from a scheduler, and no NIF did:
  # after a passing check, or by another process while a check's run has
  # failed a request, handled it and returned (async tests). The note
  # blamed that NIF, "the NIF, or a C library it called, ended the process
  # on that failure", of System.halt(0).
  test "a VM halted outside a check's NIF call: no note" do
    for {halt, status} <- [
          {"""
           {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.correct(1) end)
           System.halt(3)
           """, 3},
          {"""
           parent = self()
           spawn(fn -> BeamAlloc.Testing.check_all_allocation_failures(fn ->
             if match?({:error, _}, #{@faults}.correct(1)), do: send(parent, :failed)
             Process.sleep(200) end) end)
           receive do: (:failed -> System.halt(0))
           """, 0}
        ] do
      assert {out, ^status} =
               run_vm(:elixir, "{:ok, _} = Application.ensure_all_started(:beam_alloc)\n" <> halt)

      refute out =~ "beam_alloc: the VM", out
    end
  end

  @uses_null_from_erlang """
  {ok, _} = application:ensure_all_started(beam_alloc),
  beam_alloc_testing:check_all_allocation_failures(
      fun() -> 'Elixir.#{@faults}':uses_null(7) end),
  halt(0).
  """

  # A C++ NIF's request is made inside the standard library's code
  # (std::vector's, instantiated in the NIF): its return address names
  # only the library's headers. The crash follows the request's frames up
  # to the author's line, as the symbolizer's sites do.
  test "a C++ request made in std::vector's code: the crash names the author's line after its frames" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> CxxNif.unguarded_push(100) end)
      """)

    # std::bad_alloc out of a noexcept function: std::terminate's SIGABRT.
    assert status == 128 + 6, out

    assert out =~
             "beam_alloc: the VM got SIGABRT while check_all_allocation_failures was " <>
               "failing allocation request 0 (and every later one)",
           out

    # The request threw std::bad_alloc: there was no NULL to handle.
    assert out =~
             "(and every later one), which failed (in C++ by throwing std::bad_alloc, in C by " <>
               "returning NULL): alloc of 4 bytes at cxx_nif.so+0x",
           out

    assert out =~ ", in the NIF call `CxxNif.unguarded_push/1`: handle the failure there\n", out

    assert out =~
             "\nbeam_alloc: (the NIF mishandles that failure: a SIGABRT is most often a " <>
               "std::bad_alloc that nothing caught",
           out

    refute out =~ "NULL there", out
    refute out =~ "by using the NULL", out

    if System.find_executable("addr2line") do
      line = BeamAlloc.Test.Reports.line_of("test/nifs/cxx_nif.cpp", "unguarded push")

      # the standard library's line first, as the request's return address
      # gives it; the author's last, with only its inlined levels after it
      # (an inlined function's name has no parameters)
      assert out =~ ~r"\nbeam_alloc: that request was made in .+ at \S*/include/c\+\+/\S+\n", out

      assert out =~
               ~r"\nbeam_alloc:   (called from|inlined into) push_noexcept(\(int\))? at \S*test/nifs/cxx_nif\.cpp:#{line}\n(beam_alloc:   inlined into .+\n)*beam_alloc: \(the NIF",
             out
    end
  end

  # A request made in a NIF's body itself: addr2line names the functions
  # BEAM_NIF makes of it, beam_nif_body_X (C) and, in C++, the guard
  # beam_nif_guard_X(enif_environment_t*, int, unsigned long const*), where
  # every report names X as its author wrote it.
  # (In a namespace, addr2line qualifies them: "(anonymous
  # namespace)::beam_nif_body_X()".)
  for {lang, module, nif, file, marker} <- [
        {"C", @faults, "uses_null_in_body", "test/nifs/faults_nif.c", "null in body"},
        {"C++", "CxxNif", "null_in_body", "test/nifs/cxx_nif.cpp", "null in body"},
        {"C++ namespace's", "CxxNif", "null_in_namespace", "test/nifs/cxx_nif.cpp",
         "null in namespace"}
      ] do
    test "a request in a #{lang} NIF's body: the crash names the NIF as written" do
      {out, status} =
        run_vm(:erlang, """
        {ok, _} = application:ensure_all_started(beam_alloc),
        beam_alloc_testing:check_all_allocation_failures(
            fun() -> 'Elixir.#{unquote(module)}':#{unquote(nif)}() end),
        halt(0).
        """)

      assert status == 128 + 11, out
      refute out =~ "beam_nif_", out

      if System.find_executable("addr2line") do
        line = BeamAlloc.Test.Reports.line_of(unquote(file), unquote(marker))

        assert out =~
                 ~r"\nbeam_alloc: that request was made in #{unquote(nif)} at \S*#{unquote(file)}:#{line}\n",
               out
      end
    end
  end

  # A lambda in a C++ NIF's body is a function of its own, which addr2line
  # names beam_nif_body_X(...)::{lambda(unsigned long)#1}::operator()(...):
  # the crash must not name it X, the NIF, at the lambda's line.
  test "a request in a lambda of a C++ NIF's body: the crash does not name the lambda as the NIF" do
    {out, status} =
      run_vm(:erlang, """
      {ok, _} = application:ensure_all_started(beam_alloc),
      beam_alloc_testing:check_all_allocation_failures(
          fun() -> 'Elixir.CxxNif':null_in_lambda() end),
      halt(0).
      """)

    assert status == 128 + 11, out

    if System.find_executable("addr2line") do
      line = BeamAlloc.Test.Reports.line_of("test/nifs/cxx_nif.cpp", "null in lambda")

      refute out =~
               ~r"\nbeam_alloc: that request was made in null_in_lambda at \S*cxx_nif\.cpp:#{line}\n",
             out

      assert out =~
               ~r"\nbeam_alloc: that request was made in [^\n]*lambda[^\n]* at \S*cxx_nif\.cpp:#{line}\n"s,
             out
    end
  end

  test "the same from Erlang" do
    {out, status} = run_vm(:erlang, @uses_null_from_erlang)

    assert status == 128 + 11, out
    assert_names_the_request(out)
    assert_says_the_line(out)
    # Evaluated code (erl -eval, elixir -e) has no source to name.
    refute out =~ "was called from", out
  end

  test "without addr2line in PATH, the crash gives the command for the line" do
    erl = Path.join([:code.root_dir(), "bin", "erl"])

    tmp = tmp_dir("beam_alloc_no_addr2line")

    {out, status} =
      run_vm(erl, ["-noshell", "-eval", @uses_null_from_erlang], [
        {"PATH", path_without_addr2line(tmp)}
      ])

    assert status == 128 + 11, out
    assert_names_the_request(out)
    assert_gives_the_command(out)
  end

  # A library built without -g has no lines for addr2line to give, and
  # each one says so its own way: binutils' "no_debug_nif.c:?", LLVM's
  # "no_debug_nif.c:0" (the file from the symbol table), "??:0" or "??:?"
  # where it has not even that. Each gives the command for the line: the
  # note said "made in uses_null at no_debug_nif.c:?", which only looked
  # like a line.
  for {module, library} <- [
        {BeamAlloc.Test.Lines.NoDebug, "no_debug_nif"},
        {BeamAlloc.Test.Lines.NoDebugCxx, "no_debug_cxx_nif"}
      ],
      tool <- ~w(addr2line llvm-addr2line) do
    test "#{tool} on #{library}, built without -g: the crash gives the command for the line" do
      if real = System.find_executable(unquote(tool)) do
        # (Only this tool in the first directory of PATH: it is the one run.)
        tmp = tmp_dir("beam_alloc_one_symbolizer")
        File.ln_s!(real, Path.join(tmp, unquote(tool)))

        {out, status} =
          run_vm(
            System.find_executable("elixir"),
            [
              "-e",
              """
              {:ok, _} = Application.ensure_all_started(:beam_alloc)
              BeamAlloc.Testing.check_all_allocation_failures(fn -> #{inspect(unquote(module))}.uses_null() end)
              """
            ],
            [{"PATH", tmp <> ":" <> System.get_env("PATH")}]
          )

        assert status == 128 + 11, out
        assert out =~ "alloc of 24 bytes at #{unquote(library)}.so+0x", out
        refute out =~ "that request was made in", out

        assert out =~
                 ~r"\nbeam_alloc: its source line: addr2line -f -i -C -e \S*/#{unquote(library)}\.so 0x[0-9a-f]+\n",
               out
      end
    end
  end

  # The answers of no line that no build here gives (a stripped library,
  # LLVM's without the symbol table's file) give the command too.
  for answer <- ["??\\n??:0", "uses_null\\n??:?", "uses_null\\nfaults_nif.c:0"] do
    test "addr2line's #{inspect(answer)} gives the command for the line" do
      out = crash_with_addr2line("printf '0x1\\n#{unquote(answer)}\\n'\n")
      assert_names_the_request(out)
      refute out =~ "that request was made in", out
      assert out =~ "its source line: addr2line -f -i -C -e ", out
    end
  end

  test "an addr2line that hangs (a wrapper script whose child keeps the pipe) holds the VM 10 s at most" do
    tmp = tmp_dir("beam_alloc_slow_addr2line")
    File.write!(Path.join(tmp, "addr2line"), "#!/bin/sh\nsleep 40\n")
    File.chmod!(Path.join(tmp, "addr2line"), 0o755)

    start = System.monotonic_time(:millisecond)

    {out, status} =
      run_vm(System.find_executable("erl"), ["-noshell", "-eval", @uses_null_from_erlang], [
        {"PATH", tmp <> ":" <> System.get_env("PATH")}
      ])

    took = System.monotonic_time(:millisecond) - start
    assert status == 128 + 11, out
    assert_names_the_request(out)
    assert out =~ "its source line: addr2line -f -i -C -e ", out
    assert took < 25_000, "the dying VM waited #{took} ms"
  end

  # The output of an Erlang check's crash (uses_null) with an addr2line
  # in PATH that runs the shell commands `script` instead.
  defp crash_with_addr2line(script), do: crash_with_symbolizers(%{"addr2line" => script})

  # The same with programs named as `scripts`' keys, in one directory first
  # in PATH, each running the shell commands of its value.
  defp crash_with_symbolizers(scripts) do
    tmp = tmp_dir("beam_alloc_fake_addr2line")

    for {name, script} <- scripts do
      File.write!(Path.join(tmp, name), "#!/bin/sh\n" <> script)
      File.chmod!(Path.join(tmp, name), 0o755)
    end

    {out, status} =
      run_vm(System.find_executable("erl"), ["-noshell", "-eval", @uses_null_from_erlang], [
        {"PATH", tmp <> ":" <> System.get_env("PATH")}
      ])

    assert status == 128 + 11, out
    out
  end

  # addr2line -a writes each address on a line of its own before its
  # function and file:line pairs: a file:line that begins with 0x (a build
  # with -ffile-prefix-map, its sources in a folder 0x...) is no address.
  test "a source file whose path begins with 0x is said as the request's line" do
    out =
      crash_with_addr2line("""
      printf '0x0000000000001234\\nmake_header\\n0xdb/faults_nif.c:76\\n'
      """)

    assert_names_the_request(out)

    assert out =~ "\nbeam_alloc: that request was made in make_header at 0xdb/faults_nif.c:76\n",
           out

    refute out =~ "its source line", out
  end

  # clang's DWARF 5 (its default) is read by binutils' addr2line 2.40
  # without the functions inlined at a call (llvm-addr2line gives them): a
  # request of std::vector's in a helper inlined into a C++ BEAM_NIF has
  # the body's frame at the header's line, no author's line there. The
  # walk stops at that frame, the NIF's: past it is beam_alloc's glue.
  test "a chain with no author's line stops at the BEAM_NIF's frame, before the glue's" do
    out =
      crash_with_addr2line("""
      printf '0x1\\nstd::allocator_traits<beam::allocator<int> >::allocate(beam::allocator<int>&, unsigned long)\\n/usr/include/c++/12/bits/alloc_traits.h:318\\n'
      printf '0x2\\nbeam_nif_guard_fill_nif(enif_environment_t*, int, unsigned long const*)\\n/usr/include/c++/12/bits/stl_vector.h:1287\\n'
      printf '0x3\\ncall_composed\\nglue.c:?\\n'
      """)

    assert out =~
             "\nbeam_alloc:   called from fill_nif at /usr/include/c++/12/bits/stl_vector.h:1287\nbeam_alloc: (the NIF",
           out

    refute out =~ "call_composed", out
  end

  # binutils' addr2line 2.40 loses clang's DWARF 5 inlined functions (see
  # above); llvm-addr2line does not, and comes with clang (Debian's llvm-N,
  # which clang-N recommends, as llvm-addr2line-N). Beside addr2line, it
  # is the one run: the note had "called from fill_nif at stl_vector.h"
  # where llvm-addr2line gives the author's helper inlined there.
  test "llvm-addr2line, where it is beside addr2line, gives the line" do
    out =
      crash_with_symbolizers(%{
        "addr2line" => "printf '0x1\\nmake_header\\n/binutils/faults_nif.c:1\\n'\n",
        "llvm-addr2line" => "printf '0x1\\nmake_header\\n/llvm/faults_nif.c:2\\n'\n"
      })

    assert out =~ "\nbeam_alloc: that request was made in make_header at /llvm/faults_nif.c:2\n",
           out
  end

  # Debian's llvm-N has it as llvm-addr2line-N alone (plain llvm-addr2line
  # is the llvm package's): the highest version there is run.
  test "a versioned llvm-addr2line-N, the highest, gives the line" do
    out =
      crash_with_symbolizers(%{
        "addr2line" => "printf '0x1\\nmake_header\\n/binutils/faults_nif.c:1\\n'\n",
        "llvm-addr2line-9" => "printf '0x1\\nmake_header\\n/llvm-9/faults_nif.c:9\\n'\n",
        "llvm-addr2line-14" => "printf '0x1\\nmake_header\\n/llvm-14/faults_nif.c:14\\n'\n",
        "llvm-addr2line-14.bak" => "exit 1\n"
      })

    assert out =~
             "\nbeam_alloc: that request was made in make_header at /llvm-14/faults_nif.c:14\n",
           out
  end

  # An llvm-addr2line-N of LLVM 10 or older may not read DWARF 5, gcc's
  # default since gcc 11 (clang's since 14): beside binutils' addr2line it
  # is not the one run, which it was, the highest N of the directory. Alone
  # there it still is: a line it may not give is better than none.
  test "an llvm-addr2line-N older than LLVM 11 is run only where there is no addr2line" do
    out =
      crash_with_symbolizers(%{
        "addr2line" => "printf '0x1\\nmake_header\\n/binutils/faults_nif.c:1\\n'\n",
        "llvm-addr2line-10" => "printf '0x1\\nmake_header\\n/llvm-10/faults_nif.c:10\\n'\n"
      })

    assert out =~
             "\nbeam_alloc: that request was made in make_header at /binutils/faults_nif.c:1\n",
           out

    out =
      crash_with_symbolizers(%{
        "llvm-addr2line-10" => "printf '0x1\\nmake_header\\n/llvm-10/faults_nif.c:10\\n'\n"
      })

    assert out =~
             "\nbeam_alloc: that request was made in make_header at /llvm-10/faults_nif.c:10\n",
           out
  end

  # llvm-addr2line names a function that is not inlined by its symbol, a
  # copy gcc made of it with the copy's suffix: "beam_nif_body_X.isra.0"
  # (C), "X(int) (.constprop.0)" (C++), where binutils' gives "X" and
  # "X(int) [clone .constprop.0]". The note names X, as the reports do,
  # whichever of the two ran (a gcc build, llvm-addr2line in PATH: the
  # note said "made in uses_null.constprop.0.isra.0").
  for {tool, output, said} <- [
        {"llvm-addr2line", "beam_nif_body_uses_null.constprop.0.isra.0", "uses_null"},
        {"llvm-addr2line", "make_header.part.0", "make_header"},
        {"llvm-addr2line",
         "beam_nif_guard_fill_nif(enif_environment_t*, int, unsigned long const*) (.isra.0)",
         "fill_nif"},
        {"llvm-addr2line", "push(std::vector<int>&, int) (.constprop.0.isra.0)",
         "push(std::vector<int>&, int)"},
        {"addr2line", "push(std::vector<int>&, int) [clone .constprop.0] [clone .isra.0]",
         "push(std::vector<int>&, int)"}
      ] do
    test "#{tool}'s #{inspect(output)} is said as #{inspect(said)}" do
      out =
        crash_with_symbolizers(%{
          unquote(tool) => "printf '0x1\\n%s\\n/src/faults_nif.c:5\\n' '#{unquote(output)}'\n"
        })

      assert out =~
               "\nbeam_alloc: that request was made in #{unquote(said)} at /src/faults_nif.c:5\n",
             out
    end
  end

  # binutils' addr2line follows a line that has a discriminator (gcc 14's
  # DWARF, Debian 13) with " (discriminator N)": the note said "made in X
  # at cxx_nif.cpp:184 (discriminator 1)", where the reports say the line
  # alone (found running make test on Debian 13). Cut, as the copy suffix.
  test "a line's discriminator is not said" do
    out =
      crash_with_symbolizers(%{
        "addr2line" => "printf '0x1\\nmake_header\\n/src/faults_nif.c:5 (discriminator 1)\\n'\n"
      })

    assert out =~ "\nbeam_alloc: that request was made in make_header at /src/faults_nif.c:5\n",
           out
  end

  # One BEAM_NIF under a normal and a dirty name: the crash names the one
  # the call came in by, as the glue does.
  test "a crash in a NIF's dirty twin names the dirty name" do
    assert_crash_names("#{@faults}.uses_null_dirty(7)", "#{@faults}.uses_null_dirty/1")
  end

  # The same BEAM_NIF called by its normal name, moving itself to a dirty
  # scheduler (enif_schedule_nif under that name) before the crash: the
  # continuation is the call by the normal name (the note named the dirty
  # twin, by the scheduler the continuation ran on).
  test "a crash in a NIF's continuation on a dirty scheduler names the call's name" do
    assert_crash_names("#{@faults}.hops_to_null(7)", "#{@faults}.hops_to_null/1")
  end

  # One BEAM_NIF under two arities (optional arguments handled by argc):
  # the crash names the arity called, as the glue does. The note, naming
  # the call by its code address, named the first entry: uses_null/1.
  test "a crash in a NIF listed under two arities names the arity called" do
    assert_crash_names("#{@faults}.uses_null(7, :opt)", "#{@faults}.uses_null/2")
  end

  # A BEAM_NIF whose body calls another's C function (uses_null's, under
  # two arities): the copy's innermost call is that nested one, not the
  # NIF the VM called, which the crash names as before.
  test "a crash in a BEAM_NIF called from another's body names the NIF the VM called" do
    assert_crash_names("#{@faults}.uses_null_via(7)", "#{@faults}.uses_null_via/1")
  end

  # A call too long for the note (its name 156 backslashes, escaped, and
  # a two-byte character where the text is cut) is cut before the
  # character and keeps its closing backquote: the note's
  # "the NIF call `...`" had lost the backquote and half the character.
  test "a crash in a NIF whose call is too long to write is cut before a whole character" do
    line = crash_line_of_long_name(:long_name)
    assert String.valid?(line), inspect(binary_part(line, byte_size(line) - 40, 40))
    assert line =~ ~r/, in the NIF call `#{@faults}\."(\\\\)+a?`: handle the NULL there$/, line
  end

  # The same cut between two escapes (4 bytes each): the note ended in
  # half of one, "\x01\".
  test "a crash in a NIF whose call is too long to write is cut between whole escapes" do
    line = crash_line_of_long_name(:escapes_name)
    assert line =~ ~r/, in the NIF call `#{@faults}\."(\\x01)+`: handle the NULL there$/, line
  end

  # The crash note's line of a call of Faults' NIF whose name name/0 gives.
  defp crash_line_of_long_name(name) do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn ->
        apply(#{@faults}, #{@faults}.#{name}(), [7])
      end)
      """)

    assert status == 128 + 11, out
    [line] = Regex.run(~r/[^\n]*, in the NIF call `[^\n]*/, out)
    line
  end

  # The NIF's name as its language writes it, quoted where it must be, as
  # the glue's reports write it: the note wrote Faults.uses null/1 and
  # beam_alloc_erl_test:end/1. And in backquotes in an Elixir module, as
  # they say it ("found when the NIF call `M.f/0` returned"), not in an
  # Erlang one: the note had none.
  test "a crash in a NIF whose name needs quotes names it quoted" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}."uses null"(7) end)
      """)

    assert status == 128 + 11, out
    assert out =~ ~s/, in the NIF call `#{@faults}."uses null"\/1`: handle the NULL there/, out

    {out, status} =
      run_vm(:erlang, """
      {ok, _} = application:ensure_all_started(beam_alloc),
      beam_alloc_testing:check_all_allocation_failures(fun() -> beam_alloc_erl_test:'end'(7) end),
      halt(0).
      """)

    assert status == 128 + 11, out
    assert out =~ ", in the NIF call beam_alloc_erl_test:'end'/1: handle the NULL there", out
  end

  # A thread the NIF started has no NIF function on its stack: the NIF
  # nearest below its code is a guess, often another NIF. No name then; and
  # no claim of who started it: a pool thread made at load, or by an earlier
  # call, is told apart from the call's by its thread alone.
  test "a crash on a thread the NIF started names the request, and no NIF call it cannot know" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.uses_null_in_thread() end)
      """)

    assert status == 128 + 11, out
    line = BeamAlloc.Test.Reports.line_of("test/nifs/faults_nif.c", "null in thread")

    assert out =~
             ~r"failing allocation request 0 \(and every later one\), which returned NULL: alloc of 8 bytes at faults_nif\.so\+0x[0-9a-f]+, on a thread other than the NIF call's: handle the NULL there\n",
           out

    if System.find_executable("addr2line"),
      do: assert(out =~ ~r"made in use_null_there at \S*test/nifs/faults_nif\.c:#{line}\n", out)
  end

  # A request made in a callback another library calls (qsort's compare,
  # zlib's zalloc, a hooked library's malloc): the NIF library's frames
  # nearest it are the callback's, and the NIF nearest below that code is a
  # guess. The crash names the NIF the VM called.
  test "a crash in a callback another library calls names the NIF the VM called" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.uses_null_in_callback() end)
      """)

    assert status == 128 + 11, out

    assert out =~
             ~r"failing allocation request 0 \(and every later one\), which returned NULL: alloc of 8 bytes at faults_nif\.so\+0x[0-9a-f]+, in the NIF call `#{@faults}\.uses_null_in_callback/0`: handle the NULL there\n",
           out
  end

  # The line after the marker "CALLER: the next line" in file.
  defp caller_line(file),
    do: caller_line_in(File.read!(file), "CALLER: the next line") + 1

  # The line of text with marker.
  defp caller_line_in(text, marker) do
    text
    |> String.split("\n")
    |> Enum.find_index(&String.contains?(&1, marker))
    |> Kernel.+(1)
  end

  # With many test files, the NIF alone does not say which test crashed:
  # the note names the code that called the check (function `mfa`, at
  # file's "CALLER: the next line"), as its language writes it, last.
  defp assert_names_the_caller(lang, call, mfa, file) do
    {out, status} = run_vm(lang, call)

    assert status == 128 + 11, out
    assert_names_the_request(out)

    assert out =~
             ~r"see README, \"When a check crashes the VM\"\)\nbeam_alloc: that check_all_allocation_failures was called from #{Regex.escape(mfa)} at \S*#{file}:#{caller_line(file)}\n$",
           out
  end

  test "the crash names the code that called the check, as Elixir writes it" do
    assert_names_the_caller(
      :elixir,
      "BeamAlloc.Test.CrashCaller.checks()",
      "BeamAlloc.Test.CrashCaller.checks/0",
      "test/support/crash_caller.ex"
    )
  end

  test "the crash names the code that called the check, as Erlang writes it" do
    assert_names_the_caller(
      :erlang,
      "beam_alloc_crash_caller:checks_test().",
      "beam_alloc_crash_caller:checks_test/0",
      "test/erlang/beam_alloc_crash_caller.erl"
    )
  end

  # The stack the VM gives a process is its innermost backtrace_depth
  # frames (8 unless set), three or four of them the check's: a test that
  # reaches the check through more nested calls than the rest was named by
  # the innermost of them, a helper. Named now by the function that wrote
  # the fun, found on the whole stack, with its file (no line: the whole
  # stack's text has none).
  for {lang, call, mfa, file} <- [
        {:elixir, "BeamAlloc.Test.CrashCaller.deep()", "BeamAlloc.Test.CrashCaller.deep/0",
         "test/support/crash_caller.ex"},
        {:erlang, "beam_alloc_crash_caller:deep_test().", "beam_alloc_crash_caller:deep_test/0",
         "test/erlang/beam_alloc_crash_caller.erl"}
      ] do
    test "a check nested deeper than the stack the VM gives: the crash names the test (#{lang})" do
      {out, status} = run_vm(unquote(lang), unquote(call))

      assert status == 128 + 11, out
      assert_names_the_request(out)

      assert out =~
               ~r"\nbeam_alloc: that check_all_allocation_failures was called from #{Regex.escape(unquote(mfa))} at \S*#{unquote(file)}\n$",
             out
    end
  end

  # A test whose last expression is the check (an EUnit test function) has
  # no frame of its own while the check runs: the function is named by the
  # fun given to the check, written there.
  test "a check called last in an ExUnit test: the crash names the test" do
    {out, status} =
      run_vm(:elixir, "BeamAlloc.Test.CrashCaller.\"test parse under the check\"(%{})")

    assert status == 128 + 11, out

    assert out =~
             ~r"\nbeam_alloc: that check_all_allocation_failures was called from BeamAlloc\.Test\.CrashCaller\.\"test parse under the check\"/1 at \S*test/support/crash_caller\.ex\n",
           out
  end

  # An ExUnit test file run by ExUnit's own runner, in a VM of its own:
  # `body` is its one test's, "CALLER" marking the check's line; with
  # `guarded: true` the module has `use BeamAlloc.Case` too.
  defp run_exunit_test(body, opts \\ []) do
    file = Path.join(tmp_dir("crash_caller"), "caller_test.exs")
    guard = if opts[:guarded], do: "use BeamAlloc.Case", else: ""

    File.write!(file, """
    {:ok, _} = Application.ensure_all_started(:beam_alloc)
    ExUnit.start(autorun: false)

    defmodule CallerTest do
      use ExUnit.Case
      #{guard}

      def made_elsewhere, do: fn -> #{@faults}.uses_null(7) end

      test "the check" do
    #{body}
      end
    end

    ExUnit.run()
    """)

    line = caller_line_in(File.read!(file), "CALLER")
    {out, status} = run_vm(System.find_executable("elixir"), [file])
    assert status == 128 + 11, out
    {out, file, line}
  end

  # A test that makes its fun with a helper has its own frame while the
  # check runs: the note names the test at its line, not the helper that
  # wrote the fun.
  test "a fun a helper made: the crash names the test that called the check" do
    {out, file, line} =
      run_exunit_test("""
          f = made_elsewhere()
          {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(f) # CALLER
      """)

    assert out =~
             "\nbeam_alloc: that check_all_allocation_failures was called from " <>
               "CallerTest.\"test the check\"/1 at #{file}:#{line}\n",
           out
  end

  # A check called last in a test ExUnit's runner runs: ExUnit's test
  # keeps its frame (no tail call), and the note names it at its line.
  test "a check called last in a test ExUnit runs: the crash names the test" do
    {out, file, line} =
      run_exunit_test("""
          BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.uses_null(7) end) # CALLER
      """)

    assert out =~
             "\nbeam_alloc: that check_all_allocation_failures was called from " <>
               "CallerTest.\"test the check\"/1 at #{file}:#{line}\n",
           out
  end

  # BeamAlloc.Case wraps each test (defoverridable): the body, where the
  # fun is written, is "test the check (overridable 1)", which the note
  # named. It names the test as ExUnit does.
  test "a check in a test BeamAlloc.Case wraps: the crash names the test, not its body" do
    {out, file, line} =
      run_exunit_test(
        """
            BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.uses_null(7) end) # CALLER
            :ok
        """,
        guarded: true
      )

    assert out =~
             "\nbeam_alloc: that check_all_allocation_failures was called from " <>
               "CallerTest.\"test the check\"/1 at #{file}:#{line}\n",
           out
  end

  # A fun of a module not loaded (from another node, or binary_to_term/1)
  # has no name to say who wrote it: the check runs it (its call loads the
  # module), and names no writer.
  test "a fun whose module is not loaded: the check runs it" do
    {out, status} =
      run_vm(:erlang, """
      application:ensure_all_started(beam_alloc),
      M = 'Elixir.BeamAlloc.Test.CrashCaller',
      T = term_to_binary(M:made_fun()),
      true = code:delete(M),
      _ = code:purge(M),
      io:format("~p~n", [beam_alloc_testing:check_all_allocation_failures(binary_to_term(T))]),
      halt().
      """)

    assert {status, out} == {0, "{ok,0}\n"}
  end

  # A caller text longer than the slot's room is cut before a whole
  # character (UTF-8), never inside one: the note stays valid text.
  test "a caller text longer than the note's room is cut between characters" do
    {out, status} =
      run_vm(:erlang, """
      application:ensure_all_started(beam_alloc),
      Caller = <<(binary:copy(<<"a">>, 510))/binary, "é and the rest"/utf8>>,
      beam_alloc_testing:run_check(fun() -> '#{"Elixir." <> @faults}':uses_null(7) end, any, all, Caller).
      """)

    assert status == 128 + 11, out
    assert String.valid?(out), inspect(out, binaries: :as_binaries, limit: :infinity)

    assert out =~
             ~r"\nbeam_alloc: that check_all_allocation_failures was called from a{510}\n$",
           out
  end

  test "a crash in the first run says no allocation was failed; SIGABRT stays SIGABRT" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.aborts() end)
      """)

    assert status == 128 + 6, out

    assert out =~
             "beam_alloc: the VM got SIGABRT while check_all_allocation_failures was " <>
               "making a run that fails no allocation",
           out

    refute out =~ "failing allocation request", out
  end

  test "a check that passes writes nothing, and the VM's signal actions come back" do
    {out, status} =
      run_vm(:elixir, ~S"""
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      caught = fn ->
        [line] = for "SigCgt:" <> mask <- File.read!("/proc/self/status") |> String.split("\n"), do: mask
        String.to_integer(String.trim(line), 16)
      end
      # SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE
      ours = Enum.reduce([11, 7, 6, 4, 8], 0, &Bitwise.bor(&2, Bitwise.bsl(1, &1 - 1)))
      before = caught.()
      during = fn -> send(self(), {:during, caught.()}); BeamAlloc.Test.Faults.correct(3) end
      {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(during)
      receive do {:during, d} -> IO.puts("during=#{Bitwise.band(d, ours) == ours}") end
      IO.puts("restored=#{caught.() == before}")
      """)

    assert status == 0, out
    assert out == "during=true\nrestored=true\n"
  end

  # Review of the handler (r2): each of these looped, blamed the wrong check,
  # or wrote a crash that was none.

  # The VM's output and status for a crash in a check (uses_null) after
  # `before`: killed by SIGSEGV once, with one report (String.split/2's
  # count), not round and round.
  defp crash_after(before) do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      #{before}
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.uses_null(7) end)
      """)

    assert status == 128 + 11, String.slice(out, 0, 2000)
    assert length(String.split(out, "the VM got SIGSEGV")) == 2, String.slice(out, 0, 2000)
    assert_names_the_request(out)
    out
  end

  # Another library's SIGSEGV action put in during a check (`swap`).
  defp after_a_check_that(swap) do
    "{:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(fn -> " <>
      "#{@faults}.#{swap}(); #{@faults}.correct(2) end)"
  end

  test "a previous SA_RESETHAND handler runs once, and the VM dies by the signal" do
    out = crash_after("#{@faults}.install_reporter()")
    assert length(String.split(out, "reporter's handler ran")) == 2, String.slice(out, 0, 2000)
  end

  test "the handler put back by another library between checks does not chain to itself" do
    crash_after(after_a_check_that("swap_segv") <> "\n#{@faults}.restore_segv()")
  end

  test "a handler installed over ours during a check, chaining to it, stays the only way in" do
    crash_after(after_a_check_that("chain_segv"))
  end

  test "an ignored signal sent during a check (the VM ignores SIGFPE) says nothing" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(fn ->
        #{@faults}.sends_itself(8); #{@faults}.correct(2) end)
      IO.puts("alive")
      """)

    assert {out, status} == {"alive\n", 0}
  end

  test "a real SIGFPE during a check still kills the VM by SIGFPE" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.divides(0) end)
      """)

    assert status == 128 + 8, out
    assert out =~ "the VM got SIGFPE while check_all_allocation_failures", out
  end

  test "with another check failing requests meanwhile, the crash names the crashing one's" do
    {out, status} =
      run_vm(:elixir, """
      {:ok, _} = Application.ensure_all_started(:beam_alloc)
      parent = self()
      spawn(fn -> BeamAlloc.Testing.check_all_allocation_failures(fn ->
        send(parent, :failing); #{@faults}.many(3000); Process.sleep(1) end) end)
      receive do: (:failing -> Process.sleep(500))
      BeamAlloc.Testing.check_all_allocation_failures(fn -> #{@faults}.uses_null(7) end)
      """)

    assert status == 128 + 11, out
    assert_names_the_request(out)
    refute out =~ "many/1", out
  end
end
