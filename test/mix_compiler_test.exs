defmodule BeamAlloc.MixCompilerTest do
  # The :beam_alloc Mix compiler (Mix.Tasks.Compile.BeamAlloc), run on small
  # throwaway projects in a temporary directory: what it builds, when it
  # rebuilds, and how it fails. (examples/elixir_nif is the whole user
  # story, built from a clean copy by `make test`.)
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias Mix.Tasks.Compile.BeamAlloc, as: Compiler

  setup context do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_mixc_#{context.line}")

    shell = Mix.shell()
    Mix.shell(Mix.Shell.Process)

    saved =
      Map.new(~w(CC CXX CFLAGS CXXFLAGS LDFLAGS ERTS_INCLUDE_DIR), &{&1, System.get_env(&1)})

    # The copies of the library that beam_alloc.mk made in this checkout
    # for the test's projects (build/mk-<checksum of the folder>, 2 MB
    # each): each run of this file left five more, never used again.
    mk_copies = Path.join(File.cwd!(), "build/mk-*")
    before = Path.wildcard(mk_copies)

    on_exit(fn ->
      Mix.shell(shell)
      Enum.each(Path.wildcard(mk_copies) -- before, &File.rm_rf!/1)

      Enum.each(saved, fn
        {k, nil} -> System.delete_env(k)
        {k, v} -> System.put_env(k, v)
      end)
    end)

    File.mkdir_p!(Path.join(dir, "c_src"))
    {:ok, dir: dir}
  end

  @nif_c """
  #include <beam_alloc_nif.h>
  #include "answer.h"

  int cxx_twice(int x);

  BEAM_NIF(answer) {
      int *p = beam_alloc(beam_allocator, int, 1);
      if (p == NULL)
          return beam_make_error(env, "enomem");
      *p = cxx_twice(ANSWER_HALF);
      ERL_NIF_TERM t = enif_make_int(env, *p);
      beam_free(beam_allocator, p, 1);
      return t;
  }

  static ErlNifFunc funcs[] = {{"answer", 0, answer, 0}};
  BEAM_NIF_INIT(tmp_nif, funcs, NULL, NULL, NULL)
  """

  @nif_cpp """
  #include <vector>
  extern "C" int cxx_twice(int x) { std::vector<int> v{x, x}; return v[0] + v[1]; }
  """

  # A project `name` in dir with the given :beam_alloc options.
  defp project(dir, name, beam_alloc) do
    File.write!(Path.join(dir, "c_src/answer.h"), "#define ANSWER_HALF 21\n")
    File.write!(Path.join(dir, "c_src/tmp_nif.c"), @nif_c)
    File.write!(Path.join(dir, "c_src/twice.cpp"), @nif_cpp)
    mix_exs!(dir, name, beam_alloc: beam_alloc)
  end

  # A mix.exs in dir for the project name, version 0.1.0, with config.
  defp mix_exs!(dir, name, config) do
    File.write!(Path.join(dir, "mix.exs"), """
    defmodule #{Macro.camelize(to_string(name))}.MixProject do
      use Mix.Project
      def project do
        #{inspect([app: name, version: "0.1.0"] ++ config)}
      end
    end
    """)

    name
  end

  # Runs the compiler in the project: {result, shell lines, stdout}.
  # A Mix.Error comes back with what the build printed, so that a failure
  # says why.
  defp compile(dir, name, args \\ []) do
    {result, out} =
      with_io(fn ->
        try do
          Mix.Project.in_project(name, dir, fn _ -> Compiler.run(args) end)
        rescue
          e in Mix.Error -> {:raised, e}
        end
      end)

    case result do
      {:raised, e} ->
        raise Mix.Error,
          message:
            e.message <>
              "\n--- shell ---\n" <> Enum.join(shell_lines(), "\n") <> "\n--- stdout ---\n" <> out

      _ ->
        {result, shell_lines(), out}
    end
  end

  defp shell_lines(acc \\ []) do
    receive do
      {:mix_shell, _, [line]} -> shell_lines([line | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp so_path(dir, app, nif),
    do: Path.join([dir, "_build", "test", "lib", to_string(app), "priv", "#{nif}.so"])

  # Sources 100 s old, build outputs 50 s old.
  defp age(dir) do
    now = System.os_time(:second)

    for file <- Path.wildcard(Path.join(dir, "c_src/*")),
        do: File.touch!(file, now - 100)

    for file <- Path.wildcard(Path.join(dir, "_build/**/*.{o,so,d,cmd}"), match_dot: true),
        do: File.touch!(file, now - 50)
  end

  defp exported(so) do
    {out, 0} = System.cmd("nm", ["-D", "--defined-only", so])
    for line <- String.split(out, "\n", trim: true), do: List.last(String.split(line))
  end

  # Loads the library under the module name it was built for and calls it.
  defp call_answer(so),
    do: with_nif(:tmp_nif, so, [answer: 0], fn -> apply(:tmp_nif, :answer, []) end)

  # fun's result, with module (whose NIF library so is, with the NIFs
  # nifs, [name: arity]) created and loaded around it.
  defp with_nif(module, so, nifs, fun) do
    drop = fn ->
      :code.purge(module)
      :code.delete(module)
      :code.purge(module)
    end

    drop.()

    stubs =
      for {name, arity} <- nifs do
        args = Macro.generate_arguments(arity, __MODULE__)
        quote do: def(unquote(name)(unquote_splicing(args)), do: :erlang.nif_error(:not_loaded))
      end

    {:module, _, _, _} =
      Module.create(
        module,
        quote do
          def load(path), do: :erlang.load_nif(path, 0)
          unquote_splicing(stubs)
        end,
        Macro.Env.location(__ENV__)
      )

    :ok = apply(module, :load, [String.to_charlist(Path.rootname(so))])

    try do
      fun.()
    after
      drop.()
    end
  end

  # clang++ 14 compiles C++14 unless told, and <beam_alloc.hpp> is C++17:
  # C++ gets -std=gnu++17 before the user's flags (a CI's CXXFLAGS, which
  # name no -std, replaced a default that did).
  test "builds <beam_alloc.hpp> code with clang++ and CXXFLAGS that name no -std", %{dir: dir} do
    if System.find_executable("clang++") do
      app = project(dir, :mixc_clangxx, nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]])

      File.write!(Path.join(dir, "c_src/twice.cpp"), """
      #include <beam_alloc.hpp>
      #include <vector>
      extern "C" int cxx_twice(int x) {
          std::vector<int, beam::allocator<int>> v{x, x};
          return v[0] + v[1];
      }
      """)

      System.put_env("CXX", "clang++")
      System.put_env("CXXFLAGS", "-O2")
      assert {{:ok, []}, lines, _} = compile(dir, app)
      assert "beam_alloc: linking priv/tmp_nif.so" in lines, Enum.join(lines, "\n")
      assert call_answer(so_path(dir, app, :tmp_nif)) == 42
    end
  end

  # clang writes no .debug_aranges, the gcc-built libbeam_alloc.a does:
  # libdw then found no compilation unit, or one of beam_alloc's, for the
  # NIF's own code, and its reports had no source lines.
  test "reports of a NIF built with clang name its source lines", %{dir: dir} do
    if System.find_executable("clang") && BeamAlloc.Symbolizer.with_libdw?() do
      File.write!(Path.join(dir, "c_src/clang_leak.c"), """
      #include <beam_alloc_nif.h>
      BEAM_NIF(leaky, .leak_check = true) {
          int *p = beam_alloc(beam_allocator, int, 4);
          return enif_make_int(env, p != NULL);
      }
      BEAM_NIF(branchy, .leak_check = true) {
          int which; char local[16] = {0};
          void *own = beam_alloc_bytes(beam_allocator, 16, 8);
          if (!enif_get_int(env, argv[0], &which) || own == NULL) return enif_make_badarg(env);
          if (which == 1) {
              beam_free(beam_allocator, local, 16);
          } else if (which == 2) {
              beam_free(beam_allocator, local, 16);
          }
          beam_free_bytes(beam_allocator, own, 16, 8);
          return enif_make_int(env, local[0]);
      }
      static ErlNifFunc funcs[] = {{"leaky", 0, leaky, 0}, {"branchy", 1, branchy, 0}};
      BEAM_NIF_INIT(beam_alloc_clang_leak, funcs, NULL, NULL, NULL)
      """)

      app = project(dir, :mixc_clang_lines, nifs: [clang_leak: ["c_src/clang_leak.c"]])
      System.put_env("CC", "clang")
      assert {{:ok, []}, _, _} = compile(dir, app)
      so = so_path(dir, app, :clang_leak)

      mark = BeamAlloc.Reporter.mark()

      # (The reports taken while the library is loaded: its sites are
      # resolved in the loaded object.)
      # Two frees alike ending two branches, each at its line: clang
      # merges them unless told not to (the Mix compiler does).
      # (The reports waited for inside the capture: the reporter logs
      # them, and the warnings are the test's to check.)
      reports =
        with_nif(:beam_alloc_clang_leak, so, [leaky: 0, branchy: 1], fn ->
          {reports, _warnings} =
            ExUnit.CaptureLog.with_log(fn ->
              # (An Erlang module: erlang:error({memory_leak, Message}).)
              assert_raise ErlangError, ~r/memory leak detected/, fn ->
                apply(:beam_alloc_clang_leak, :leaky, [])
              end

              for which <- [1, 2] do
                assert_raise ErlangError, ~r/memory misuse detected/, fn ->
                  apply(:beam_alloc_clang_leak, :branchy, [which])
                end
              end

              BeamAlloc.Test.Reports.wait_since(mark, 4)
            end)

          reports
        end)

      assert [line] = for(%{line: l} <- reports, l =~ "leak: ", do: l)
      assert line =~ ~r"allocated from leaky \(\S*clang_leak\.c:3\)", line

      assert [one, two] = for(%{line: l} <- reports, l =~ "does not own", do: l)
      assert one =~ ~r"called from branchy \(\S*clang_leak\.c:11\)", one
      assert two =~ ~r"called from branchy \(\S*clang_leak\.c:13\)", two
    end
  end

  test "builds C and C++ sources into priv/<name>.so under _build, exporting nothing of beam_alloc",
       %{dir: dir} do
    app =
      project(dir, :mixc_build,
        nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]],
        cflags: ["-Wall", "-Werror"]
      )

    assert {{:ok, []}, lines, _} = compile(dir, app)
    assert "beam_alloc: compiling c_src/tmp_nif.c (tmp_nif)" in lines
    assert "beam_alloc: compiling c_src/twice.cpp (tmp_nif)" in lines
    assert "beam_alloc: linking priv/tmp_nif.so" in lines

    so = so_path(dir, app, :tmp_nif)
    assert Enum.sort(exported(so)) == ["beam_alloc_fault_hooks_v1", "nif_init"]
    {sections, 0} = System.cmd("readelf", ["-S", so])
    assert sections =~ ".debug_info"
    assert call_answer(so) == 42
  end

  test "rebuilds only when a source, a header or a flag changed", %{dir: dir} do
    app = project(dir, :mixc_incr, nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]])
    assert {{:ok, _}, _, _} = compile(dir, app)
    so = so_path(dir, app, :tmp_nif)

    assert {{:noop, []}, [], _} = compile(dir, app)

    # A header the C source includes changes: that source again, and a
    # relink. (Sources and outputs are first dated back, so that seconds
    # are enough to tell them apart.)
    age(dir)
    File.write!(Path.join(dir, "c_src/answer.h"), "#define ANSWER_HALF 50\n")
    assert {{:ok, _}, lines, _} = compile(dir, app)
    assert "beam_alloc: compiling c_src/tmp_nif.c (tmp_nif)" in lines
    refute "beam_alloc: compiling c_src/twice.cpp (tmp_nif)" in lines
    assert "beam_alloc: linking priv/tmp_nif.so" in lines
    assert call_answer(so) == 100

    assert {{:noop, []}, [], _} = compile(dir, app)

    # An edit right after a build, within its second: seen, by content
    # (whole-second modification times took it for older than the object).
    # A file dated forward without a change rebuilds nothing.
    File.write!(Path.join(dir, "c_src/answer.h"), "#define ANSWER_HALF 7\n")
    assert {{:ok, _}, lines, _} = compile(dir, app)
    assert "beam_alloc: compiling c_src/tmp_nif.c (tmp_nif)" in lines
    assert call_answer(so) == 14
    File.touch!(Path.join(dir, "c_src/tmp_nif.c"))
    assert {{:noop, []}, [], _} = compile(dir, app)

    # CFLAGS from the environment are part of the command: a change rebuilds.
    # (A warning option, added to what beam_alloc's Makefile defaults to:
    # its library leaves warning options out, so it is not built again for
    # this; -O1 rebuilt it, and rebuilt it back in the next test, 5-8 s
    # each.)
    System.put_env("CFLAGS", System.get_env("CFLAGS", "-O2 -g") <> " -Wno-unused")
    assert {{:ok, _}, lines, _} = compile(dir, app)
    assert "beam_alloc: compiling c_src/tmp_nif.c (tmp_nif)" in lines
    refute "beam_alloc: compiling c_src/twice.cpp (tmp_nif)" in lines

    # --force rebuilds everything
    assert {{:ok, _}, lines, _} = compile(dir, app, ["--force"])
    assert "beam_alloc: compiling c_src/twice.cpp (tmp_nif)" in lines
  end

  test "honours CFLAGS, LDFLAGS, per-NIF flags and extra libraries", %{dir: dir} do
    File.write!(Path.join(dir, "c_src/flags.c"), """
    #include <beam_alloc_nif.h>
    #include <zlib.h>
    #if !defined(FROM_ENV) || !defined(FROM_CONFIG)
    #error "flags missing"
    #endif
    BEAM_NIF(answer) { return enif_make_ulong(env, compressBound(0) > 0 ? 42 : 0); }
    static ErlNifFunc funcs[] = {{"answer", 0, answer, 0}};
    BEAM_NIF_INIT(tmp_nif, funcs, NULL, NULL, NULL)
    """)

    app =
      project(dir, :mixc_flags,
        nifs: [tmp_nif: [sources: ["c_src/flags.c"], cflags: ["-DFROM_CONFIG"], libs: ["z"]]]
      )

    System.put_env("CFLAGS", "-O2 -DFROM_ENV")
    System.put_env("LDFLAGS", "-Wl,-z,now")
    assert {{:ok, _}, _, _} = compile(dir, app)
    so = so_path(dir, app, :tmp_nif)
    {dynamic, 0} = System.cmd("readelf", ["-d", so])
    assert dynamic =~ "libz.so"
    assert dynamic =~ "BIND_NOW"
    assert call_answer(so) == 42
  end

  test ":cxxflags reach C++ sources only, after :cflags", %{dir: dir} do
    File.write!(Path.join(dir, "c_src/only_c.c"), """
    #include <beam_alloc_nif.h>
    #if !defined(FROM_CFLAGS) || defined(FROM_CXXFLAGS) || defined(FROM_NIF_CXXFLAGS)
    #error "C flags wrong"
    #endif
    extern int cxx_answer(void);
    BEAM_NIF(answer) { return enif_make_int(env, cxx_answer()); }
    static ErlNifFunc funcs[] = {{"answer", 0, answer, 0}};
    BEAM_NIF_INIT(tmp_nif, funcs, NULL, NULL, NULL)
    """)

    File.write!(Path.join(dir, "c_src/only_cxx.cpp"), """
    #if !defined(FROM_CFLAGS) || !defined(FROM_CXXFLAGS) || !defined(FROM_NIF_CXXFLAGS)
    #error "C++ flags missing"
    #endif
    #if __cplusplus < 202002L
    #error "-std=c++20 from :cxxflags did not win over the default"
    #endif
    extern "C" int cxx_answer(void) { return 42; }
    """)

    app =
      project(dir, :mixc_cxxflags,
        nifs: [
          tmp_nif: [
            sources: ["c_src/only_c.c", "c_src/only_cxx.cpp"],
            cxxflags: ["-DFROM_NIF_CXXFLAGS"]
          ]
        ],
        cflags: ["-DFROM_CFLAGS", "-Werror"],
        cxxflags: ["-std=c++20", "-DFROM_CXXFLAGS"]
      )

    assert {{:ok, []}, lines, _} = compile(dir, app)
    assert "beam_alloc: linking priv/tmp_nif.so" in lines, Enum.join(lines, "\n")
    assert call_answer(so_path(dir, app, :tmp_nif)) == 42

    # A value that is not a list of strings is refused like :cflags.
    app = project(dir, :mixc_cxxflags_bad, nifs: [tmp_nif: ["c_src/only_c.c"]], cxxflags: "-O3")
    assert_raise Mix.Error, ~r/cxxflags/, fn -> compile(dir, app) end
  end

  test "a compiler error fails with file:line, as output and as a diagnostic", %{dir: dir} do
    File.write!(Path.join(dir, "c_src/broken.c"), """
    #include <beam_alloc_nif.h>

    BEAM_NIF(answer) {
        return env env;
    }
    """)

    app = project(dir, :mixc_error, nifs: [tmp_nif: ["c_src/broken.c"]])
    assert {{:error, diagnostics}, lines, out} = compile(dir, app)
    assert out =~ ~r/c_src\/broken\.c:4:\d+: error: /
    assert Enum.any?(lines, &(&1 =~ "could not compile c_src/broken.c of NIF tmp_nif"))

    assert [%Mix.Task.Compiler.Diagnostic{severity: :error, position: 4, file: file} | _] =
             Enum.filter(diagnostics, &(&1.severity == :error))

    assert file == Path.join(dir, "c_src/broken.c")
    refute File.exists?(so_path(dir, app, :tmp_nif))
  end

  test "clear messages for a missing source, compiler or erl_nif.h", %{dir: dir} do
    app = project(dir, :mixc_missing, nifs: [tmp_nif: ["c_src/nope.c"]])

    assert_raise Mix.Error, ~r/source file c_src\/nope\.c of NIF tmp_nif does not exist/, fn ->
      compile(dir, app)
    end

    app = project(dir, :mixc_nocc, nifs: [tmp_nif: ["c_src/tmp_nif.c"]])
    System.put_env("CC", "no-such-cc-here")

    assert_raise Mix.Error,
                 ~r/the C compiler "no-such-cc-here" was not found in PATH.*set CC/s,
                 fn ->
                   compile(dir, app)
                 end

    System.delete_env("CC")
    System.put_env("ERTS_INCLUDE_DIR", dir)

    assert_raise Mix.Error, ~r/erl_nif\.h not found in #{dir}.*ERTS_INCLUDE_DIR/s, fn ->
      compile(dir, app)
    end

    System.delete_env("ERTS_INCLUDE_DIR")
    app = project(dir, :mixc_badopt, nifs: [tmp_nif: ["c_src/tmp_nif.f90"]])

    assert_raise Mix.Error, ~r/expected a C \(\.c\) or C\+\+/, fn ->
      File.write!(Path.join(dir, "c_src/tmp_nif.f90"), "")
      compile(dir, app)
    end

    app = project(dir, :mixc_unknown, nifz: [])
    assert_raise Mix.Error, ~r/unknown option\(s\) :nifz/, fn -> compile(dir, app) end

    # Options of the wrong shape name themselves (they crashed in
    # System.cmd/3 or Enum with a generic error; found in review).
    for {name, opts, message} <- [
          {:mixc_bad_target, [make: [target: :all]], ~r/:make option :target to be a string/},
          {:mixc_bad_makefile, [make: [makefile: :x]], ~r/:make option :makefile to be a string/},
          {:mixc_bad_dir, [make: [dir: 5]], ~r/:make option :dir to be a string/},
          {:mixc_bad_make, [make: ["all"]], ~r/expected :make to be true or a keyword list/},
          {:mixc_improper_sources, [nifs: [tmp_nif: ["c_src/tmp_nif.c" | "x"]]],
           ~r/NIF tmp_nif: expected a list of source files/},
          {:mixc_improper_cflags, [nifs: [tmp_nif: ["c_src/tmp_nif.c"]], cflags: ["-Wall" | "x"]],
           ~r/expected :cflags to be a list of strings/},
          # (A name is a file in priv/: ../x wrote outside it.)
          {:mixc_path_name, [nifs: ["../evil": ["c_src/tmp_nif.c"]]],
           ~r/NIF name :"..\/evil" under :nifs is not a plain file name/},
          {:mixc_dot_name, [nifs: [".hidden": ["c_src/tmp_nif.c"]]],
           ~r/NIF name :".hidden" under :nifs is not a plain file name/},
          # (The link failed with "multiple definition" of everything.)
          {:mixc_source_twice, [nifs: [tmp_nif: ["c_src/tmp_nif.c", "./c_src/tmp_nif.c"]]],
           ~r/NIF tmp_nif: source .\/c_src\/tmp_nif.c is listed twice under :sources/},
          # (An option given twice: the first was taken, the other dropped
          # without a word.)
          {:mixc_cflags_twice,
           [nifs: [tmp_nif: ["c_src/tmp_nif.c"]], cflags: ["-O0"], cflags: ["-g"]],
           ~r/option :cflags is given twice under :beam_alloc/},
          {:mixc_nif_option_twice,
           [nifs: [tmp_nif: [sources: ["c_src/tmp_nif.c"], libs: ["m"], libs: ["z"]]]],
           ~r/option :libs is given twice for NIF tmp_nif/},
          {:mixc_make_option_twice, [make: [target: "a", target: "b"]],
           ~r/option :target is given twice under :make/}
        ] do
      app = project(dir, name, opts)
      assert_raise Mix.Error, message, fn -> compile(dir, app) end
    end

    # (Both built priv/tmp_nif.so, the last one silently.)
    nifs = [tmp_nif: ["c_src/tmp_nif.c"], tmp_nif: ["c_src/twice.cpp"]]
    app = project(dir, :mixc_twice, nifs: nifs)

    assert_raise Mix.Error, ~r/NIF tmp_nif is given twice under :nifs/, fn ->
      compile(dir, app)
    end
  end

  # A 32-bit target (a Nerves board's armv6/armv7 CC; -m32 here) stops
  # before anything is compiled, with include/beam_alloc.h's message as
  # the build's first line: its sources failed with dozens of errors about
  # shifts and a static assertion (armhf: about glibc's atof), none saying
  # why. (make target-check-test checks make's own builds and the header.)
  test "a 32-bit target fails at once, saying that beam_alloc needs a 64-bit one",
       %{dir: dir} do
    app = project(dir, :mixc_m32, nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]])
    System.put_env("CFLAGS", "-O2 -g -m32")

    error = assert_raise Mix.Error, fn -> compile(dir, app) end
    assert error.message =~ "could not build beam_alloc's library"
    [_, shell] = String.split(error.message, "\n--- shell ---\n", parts: 2)
    first = shell |> String.split("\n") |> Enum.find(&(&1 =~ "error"))
    assert first =~ ~r/include\/beam_alloc\.h:\d+:\d+: error: .*beam_alloc needs a 64-bit target/
    refute File.exists?(so_path(dir, app, :tmp_nif))
  end

  test "make mode runs the project's Makefile with beam_alloc's paths exported", %{dir: dir} do
    File.write!(Path.join(dir, "Makefile"), """
    include $(BEAM_ALLOC_MK)

    all: $(MIX_APP_PATH)/priv/tmp_nif.so
    \t@echo "lib=$(BEAM_ALLOC_LIB) inc=$(BEAM_ALLOC_INCLUDE_DIR) erts=$(ERTS_INCLUDE_DIR)"

    $(MIX_APP_PATH)/priv/tmp_nif.so: c_src/tmp_nif.c c_src/twice.cpp $(BEAM_ALLOC_LIB)
    \t$(BEAM_ALLOC_BUILD_NIF_CXX)
    """)

    app = project(dir, :mixc_make, make: [target: "all"])
    assert {{:ok, []}, _, out} = compile(dir, app)
    root = File.cwd!()
    # (beam_alloc.mk's copy of the library: this project folder's own.)
    assert out =~ ~r"lib=#{Regex.escape(root)}/build/mk-\d+/libbeam_alloc\.a inc="
    assert out =~ " inc=#{root}/include erts="
    so = so_path(dir, app, :tmp_nif)
    assert Enum.sort(exported(so)) == ["beam_alloc_fault_hooks_v1", "nif_init"]
    assert call_answer(so) == 42

    # A Makefile that does not include beam_alloc.mk gets all of its NIF
    # flags too: the no-merging ones were left out of BEAM_ALLOC_CFLAGS.
    File.write!(Path.join(dir, "Makefile"), "all:\n\t@echo \"cflags=$(BEAM_ALLOC_CFLAGS)\"\n")
    assert {{:ok, []}, _, out} = compile(dir, app)
    assert out =~ ~r/cflags=.*-fvisibility=hidden.*(-fno-ipa-icf|-enable-tail-merge=false)/

    File.write!(Path.join(dir, "Makefile"), "all:\n\t@exit 3\n")
    assert_raise Mix.Error, ~r/exited with 2/, fn -> compile(dir, app) end

    # Flags for :nifs builds, with none to build, are refused, not ignored.
    app = project(dir, :mixc_make_flags, make: true, cflags: ["-DX"], libs: ["z"])

    assert_raise Mix.Error, ~r/:cflags, :libs under :beam_alloc apply to :nifs builds only/, fn ->
      compile(dir, app)
    end
  end

  # A project moving from elixir_make keeps its Makefile: make mode gave it
  # neither elixir_make's other variables (a Makefile that checks
  # ERL_EI_INCLUDE_DIR, as Nerves-style ones do, stopped) nor its priv/
  # (a .so written to the project's priv/, elixir_make's convention, was
  # not found on a clean checkout, and a stale copy was loaded after an
  # edit).
  test "make mode runs an elixir_make Makefile as elixir_make does", %{dir: dir} do
    File.write!(Path.join(dir, "Makefile"), """
    include $(BEAM_ALLOC_MK)
    ifeq ($(ERL_EI_INCLUDE_DIR),)
    $(error ERL_EI_INCLUDE_DIR not set)
    endif

    all: priv/tmp_nif.so
    \t@echo "deps=$(MIX_DEPS_PATH) ei=$(ERL_EI_INCLUDE_DIR) eilib=$(ERL_EI_LIBDIR)"

    priv/tmp_nif.so: c_src/tmp_nif.c c_src/twice.cpp c_src/answer.h $(BEAM_ALLOC_LIB)
    \t$(BEAM_ALLOC_BUILD_NIF_CXX)
    """)

    app = project(dir, :mixc_make_elixir_make, make: true)
    assert {{:ok, []}, _, out} = compile(dir, app)
    assert out =~ ~r{deps=#{dir}/deps ei=/\S+/usr/include eilib=/\S+/usr/lib}
    assert call_answer(so_path(dir, app, :tmp_nif)) == 42

    File.write!(Path.join(dir, "c_src/answer.h"), "#define ANSWER_HALF 22\n")
    assert {{:ok, []}, _, _} = compile(dir, app)
    assert call_answer(so_path(dir, app, :tmp_nif)) == 44
  end

  # beam_alloc.mk set CFLAGS ?= -O2 where it was included: a Makefile's own
  # CFLAGS ?= after the include (-O3 -Werror -std=gnu99...) was then
  # silently dropped.
  test "beam_alloc.mk leaves CFLAGS set after its include to the Makefile", %{dir: dir} do
    File.write!(Path.join(dir, "Makefile"), """
    include $(BEAM_ALLOC_MK)
    CFLAGS ?= -O1 -DUSERS_OWN
    CXXFLAGS ?= -O1 -DUSERS_OWN_CXX

    all: $(MIX_APP_PATH)/priv/tmp_nif.so
    $(MIX_APP_PATH)/priv/tmp_nif.so: c_src/tmp_nif.c c_src/twice.cpp $(BEAM_ALLOC_LIB)
    \t$(BEAM_ALLOC_BUILD_NIF_CXX)
    """)

    app = project(dir, :mixc_make_cflags, make: true)
    assert {{:ok, []}, _, out} = compile(dir, app)
    assert out =~ "-O1 -DUSERS_OWN -c c_src/tmp_nif.c"
    assert out =~ "-O1 -DUSERS_OWN_CXX c_src/twice.cpp"

    # With none set, -O2 (before CFLAGS, so that a later += keeps it).
    File.write!(Path.join(dir, "Makefile"), """
    include $(BEAM_ALLOC_MK)
    CFLAGS += -DADDED

    all: $(MIX_APP_PATH)/priv/tmp_nif.so
    $(MIX_APP_PATH)/priv/tmp_nif.so: c_src/tmp_nif.c $(BEAM_ALLOC_LIB)
    \t$(BEAM_ALLOC_BUILD_NIF)
    """)

    File.rm!(so_path(dir, app, :tmp_nif))
    assert {{:ok, []}, _, out} = compile(dir, app)
    assert out =~ ~r/-O2 .*-DADDED c_src\/tmp_nif.c/
  end

  # A CC set in the Makefile alone (a board's compiler; not exported) did
  # not reach beam_alloc's make, which built the library with cc, for the
  # host: the board's NIF then failed to link. make -n: the sub-make's
  # compile lines, nothing run.
  test "beam_alloc.mk builds the library with the Makefile's CC", %{dir: dir} do
    File.write!(Path.join(dir, "Makefile"), """
    CC = /nonexistent/board-gcc
    BEAM_ALLOC_DIR = #{File.cwd!()}
    include $(BEAM_ALLOC_DIR)/beam_alloc.mk
    all: $(BEAM_ALLOC_LIB)
    """)

    {out, _} = System.cmd("make", ["-n", "all"], cd: dir, stderr_to_stdout: true)
    assert out =~ ~r"/nonexistent/board-gcc .* -c src/gpa\.c", out
  end

  # A NIF built by beam_alloc.mk depends on $(BEAM_ALLOC_LIB), a copy that
  # beam_alloc's make wrote again only when the archive's bytes changed. An
  # update of beam_alloc that changes a header but none of the library's
  # objects (a macro, an inline function that the NIF expands and the
  # library does not) left the NIF built against the old header beside the
  # new Erlang side (found in an audit of rebuilds: make and rebar3 kept it,
  # the Mix compiler, which follows each source's headers, rebuilt it).
  # The library is built once; the update's objects, built again the same,
  # are set so by their times (35 objects twice took 20-40 s).
  @tag timeout: 300_000
  test "beam_alloc.mk rebuilds the NIF when beam_alloc's headers change", %{dir: dir} do
    copy = tree_copy!(dir)
    prebuilt_library!(copy, "-O0")
    make = probe_project!(dir, copy, [{"CFLAGS", "-O0"}])
    so = Path.join(dir, "priv/tmp_nif.so")

    assert {_, 0} = make.([])
    assert call_answer(so) == 21

    header = Path.join(copy, "include/beam_alloc.h")
    File.write!(header, File.read!(header) <> "#define BEAM_ALLOC_PROBE 4\n")
    now = System.os_time(:second)

    for file <- Path.wildcard(Path.join(copy, "build/nif-*/**/*.{o,a}")),
        do: File.touch!(file, now)

    File.touch!(header, now - 60)
    File.touch!(so, now - 50)
    File.touch!(Path.join(dir, "c_src/probe_nif.c"), now - 100)
    # (The project's own copy of the library: beam_alloc.mk's.)
    [lib] = Path.wildcard(Path.join(copy, "build/mk-*/libbeam_alloc.a"))
    File.touch!(lib, now - 100)
    # (The copy's Erlang key older too: newer, it touched the copy itself
    # and the test passed without the header's own rule.)
    File.touch!(String.replace_suffix(lib, ".a", "-erts.key"), now - 110)

    assert {out, 0} = make.([])
    assert call_answer(so) == 4, out
  end

  # beam_alloc's Erlang side for make users (make erlang-app) was built by
  # times alone: after a switch of Erlang/OTP back to one built before
  # (kerl, asdf; OTP 27 to 25) its modules stayed OTP 27's (OTP 25 refused
  # them: features_not_allowed, maybe_expr, and the user's on_load failed
  # with undef) and its NIFs were linked against the other erl_nif.h, their
  # library being the older of the two (found in an audit of rebuilds).
  # Another ERTS_INCLUDE_DIR stands for the other OTP here. The suite's
  # own test NIFs (one here, options_nif.so) were linked by times alone too:
  # after a run with another CC or OTP the next run loaded the other's
  # (found in review: a gcc run after a clang one proved nothing).
  @tag timeout: 300_000
  test "make erlang-app builds beam_alloc's modules and NIFs again for another OTP",
       %{dir: dir} do
    copy = tree_copy!(dir)
    other = other_otp!(dir, copy)

    app = [
      "-j2",
      "erlang-app",
      "build/erlang/beam_alloc/priv/options_nif.so",
      "MIX_APP_PATH=build/erlang/beam_alloc"
    ]

    rebuilt? =
      &(&1 =~ "erlc " and &1 =~ "beam_alloc_testing.so" and
          &1 =~ "-o build/erlang/beam_alloc/priv/options_nif.so")

    built_any? = &(&1 =~ "erlc " or &1 =~ "beam_alloc_testing.so" or &1 =~ "options_nif.so")
    prebuilt_library!(copy, "-O0")

    assert_built_again_for_each_erts(
      &make_in(copy, "-O0", app ++ &1),
      other,
      rebuilt?,
      built_any?
    )
  end

  # rebar3's hook builds the NIFs into this checkout's priv/ (MIX_APP_PATH
  # is .), so the key of their library, beam_alloc-nif.key, is written
  # beside the Makefile: make clean and rebar3-clean took priv/ and left
  # the key behind (found in review).
  test "make clean and rebar3-clean take the key rebar3's NIFs leave", %{dir: dir} do
    copy = tree_copy!(dir)
    key = Path.join(copy, "beam_alloc-nif.key")

    for goal <- ["clean", "rebar3-clean"] do
      File.write!(key, "cc ERTS=/none\n")
      assert {_, 0} = make_in(copy, "-O2", [goal])
      refute File.exists?(key), goal
    end
  end

  # A NIF built by beam_alloc.mk is rebuilt by the times of the library's
  # copy, which was written again only when its bytes changed: for another
  # Erlang they often do not (CFLAGS without -g: the library calls enif_*
  # by name, and nothing of erl_nif.h's version goes into its objects), and
  # the NIF kept the other Erlang's erl_nif.h (OTP 27's 2.17, which OTP 25
  # refuses to load), where the README said another Erlang rebuilds it
  # (found in review). Another ERTS_INCLUDE_DIR stands for the other OTP.
  @tag timeout: 300_000
  test "beam_alloc.mk rebuilds the NIF for another Erlang, also when the library comes out the same",
       %{dir: dir} do
    copy = tree_copy!(dir)
    other = other_otp!(dir, copy)
    # (-O0, as -O2: no -g, so both libraries come out the same.)
    make = probe_project!(dir, copy, [{"CFLAGS", "-O0"}])

    rebuilt? = &(&1 =~ "probe_nif.c")
    assert_built_again_for_each_erts(make, other, rebuilt?, rebuilt?)
  end

  # beam_alloc.mk built the library with the project's CC and its Erlang
  # side (make erlang-app, whose prerequisite the library's copy is too)
  # with beam_alloc's: with a CC set in the project's Makefile (not in the
  # environment), each make wrote the copy for the one, then the other, and
  # the NIF, built against it, was built again at every make (found in
  # review: CC = clang beside beam_alloc's cc).
  @tag timeout: 300_000
  test "beam_alloc.mk builds nothing again with a CC of the project's Makefile", %{dir: dir} do
    copy = tree_copy!(dir)
    make = probe_project!(dir, copy, [{"CC", nil}, {"CFLAGS", "-O0"}])
    makefile = Path.join(dir, "Makefile")

    File.write!(
      makefile,
      "CC = clang\n" <>
        String.replace(
          File.read!(makefile),
          "priv/tmp_nif.so:",
          "all: priv/tmp_nif.so $(BEAM_ALLOC_APP)\npriv/tmp_nif.so:"
        )
    )

    assert {_, 0} = make.(["all"])
    assert {out, 0} = make.(["all"])
    refute out =~ "probe_nif.c" or out =~ "erlc ", out
  end

  # beam_alloc's own make (rebar3's pre_hook, make lib; nif-lib here, which
  # writes the same build/libbeam_alloc.a) builds with its cc. A project
  # whose Makefile sets another CC linked that one copy too: each rebar3
  # compile wrote it for cc, then for clang, and the NIF was built again
  # at every compile (found reproducing examples/erlang_nif with CC =
  # clang); so did a second project on the same checkout with cc. The
  # library of each CC is built once (cc's from the checkout).
  @tag timeout: 300_000
  test "beam_alloc.mk builds nothing again after another make built the library with another CC",
       %{dir: dir} do
    copy = tree_copy!(dir)
    prebuilt_library!(copy, "-O0")
    make = probe_project!(dir, copy, [{"CC", nil}, {"CFLAGS", "-O0"}])
    makefile = Path.join(dir, "Makefile")
    File.write!(makefile, "CC = clang\n" <> File.read!(makefile))
    sibling = Path.join(dir, "sibling")
    File.mkdir_p!(Path.join(sibling, "c_src"))
    make_sibling = probe_project!(sibling, copy, [{"CC", nil}, {"CFLAGS", "-O0"}])

    assert {_, 0} = make_in(copy, "-O0", ["nif-lib"])
    assert {out, 0} = make.([])
    assert out =~ "probe_nif.c", out

    for other <- [fn -> make_in(copy, "-O0", ["nif-lib"]) end, fn -> make_sibling.([]) end] do
      assert {_, 0} = other.()
      assert {out, 0} = make.([])
      refute out =~ "probe_nif.c", out
    end
  end

  # A prebuilt checkout its user cannot write (installed for a machine's
  # users, a read-only mount) built a NIF of the CC, flags and Erlang it
  # was built for: beam_alloc's make compared and wrote nothing. With a
  # copy of the library for each project's folder it had a folder to make
  # there, and every project failed (mkdir: Permission denied). Run as
  # nobody under root, whom permissions do not stop.
  @tag timeout: 300_000
  test "beam_alloc.mk builds a NIF with a prebuilt checkout it cannot write", %{dir: dir} do
    copy = tree_copy!(dir)
    prebuilt_library!(copy, "-O0")
    assert {_, 0} = make_in(copy, "-O0", ["nif-lib"])
    {uid, 0} = System.cmd("id", ["-u"])
    as = if String.trim(uid) == "0", do: ~w(setpriv --reuid=65534 --regid=65534 --clear-groups)
    make = probe_project!(dir, copy, [{"CFLAGS", "-O0"}, {"HOME", dir}], as || [])
    # (The project's folder stays writable, for priv/.)
    File.chmod!(dir, 0o777)
    {_, 0} = System.cmd("chmod", ["-R", "a-w", copy])

    try do
      assert {out, 0} = make.([])
      assert out =~ "#{copy}/build/libbeam_alloc.a", out
      assert call_answer(Path.join(dir, "priv/tmp_nif.so")) == 21
    after
      System.cmd("chmod", ["-R", "u+w", copy])
    end
  end

  # $(BEAM_ALLOC_BUILD_NIF) compiles the .c prerequisites alone: given a C++
  # NIF (an adopter's rebar3 c_src/Makefile, copied from the README's C
  # one), it linked beam_alloc's library with no source, make succeeded,
  # and the module failed to load with "undefined symbol: _nif_init".
  test "beam_alloc.mk refuses a C++ source given to BEAM_ALLOC_BUILD_NIF", %{dir: dir} do
    File.write!(Path.join(dir, "Makefile"), """
    include $(BEAM_ALLOC_MK)

    all: $(MIX_APP_PATH)/priv/tmp_nif.so
    $(MIX_APP_PATH)/priv/tmp_nif.so: c_src/twice.cpp $(BEAM_ALLOC_LIB)
    \t$(BEAM_ALLOC_BUILD_NIF)
    """)

    app = project(dir, :mixc_make_cxx_as_c, make: true)

    error = assert_raise Mix.Error, fn -> compile(dir, app) end

    assert error.message =~
             "BEAM_ALLOC_BUILD_NIF builds C sources only: c_src/twice.cpp is C++, " <>
               "use $(BEAM_ALLOC_BUILD_NIF_CXX)"

    refute File.exists?(so_path(dir, app, :tmp_nif))
  end

  # make mode gave the Makefile absolute paths: under a folder with a quote
  # (or a space) its recipes' shell failed ("Unterminated quoted string"),
  # beam_alloc.mk's own sub-make first. Such paths come relative to the
  # make's directory.
  test "make mode builds a project under a path with a quote and a space", %{dir: dir} do
    dir = Path.join(dir, "o'brien nifs")
    File.mkdir_p!(Path.join(dir, "c_src"))

    File.write!(Path.join(dir, "Makefile"), """
    include $(BEAM_ALLOC_MK)

    all: $(MIX_APP_PATH)/priv/tmp_nif.so

    $(MIX_APP_PATH)/priv/tmp_nif.so: c_src/tmp_nif.c c_src/twice.cpp $(BEAM_ALLOC_LIB)
    \t$(BEAM_ALLOC_BUILD_NIF_CXX)
    """)

    app = project(dir, :mixc_make_quote, make: [target: "all"])
    assert {{:ok, []}, _, _} = compile(dir, app)
    assert call_answer(so_path(dir, app, :tmp_nif)) == 42
    assert {{:ok, []}, _, out} = compile(dir, app)
    refute out =~ "tmp_nif.c", out
  end

  # Mix runs a task that is not @recursive in the umbrella's root project
  # when it recurses into the apps: the compiler read the root's mix.exs,
  # which has no :beam_alloc, and `mix compile` at the root failed with
  # "nothing to build".
  test "in an umbrella, builds each app's NIFs in that app", %{dir: dir} do
    File.write!(Path.join(dir, "mix.exs"), """
    defmodule MixcUmbrella.MixProject do
      use Mix.Project
      def project, do: [apps_path: "apps", version: "0.1.0"]
    end
    """)

    for app <- [:mixc_umb_one, :mixc_umb_two] do
      app_dir = Path.join([dir, "apps", to_string(app)])
      File.mkdir_p!(Path.join(app_dir, "c_src"))
      project(app_dir, app, nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]])

      File.write!(
        Path.join(app_dir, "mix.exs"),
        File.read!(Path.join(app_dir, "mix.exs"))
        |> String.replace(
          "version: \"0.1.0\"",
          "version: \"0.1.0\", build_path: \"../../_build\""
        )
      )
    end

    {result, _} =
      with_io(fn ->
        Mix.Project.in_project(:mixc_umbrella, dir, fn _ ->
          Mix.Task.rerun("compile.beam_alloc")
        end)
      end)

    assert Enum.sort(List.wrap(result)) == [{:ok, []}, {:ok, []}]

    for app <- [:mixc_umb_one, :mixc_umb_two],
        do: assert(call_answer(so_path(dir, app, :tmp_nif)) == 42)
  end

  # beam_alloc's library in a dependency is built with the environment's
  # CC and CFLAGS (what ensure_library! and beam_alloc.mk run: make
  # nif-lib). Its objects did not depend on that command line: built once
  # with -fsanitize=address they stayed, and a NIF linked later without it
  # failed to load (undefined __asan_ symbols). And the user's warning
  # options, under the library's -Werror, failed its build.
  # (Three builds of the library: over a minute on a busy 2-core machine.)
  @tag timeout: 300_000
  test "the dependency's library follows CFLAGS, without their warning options", %{dir: dir} do
    copy = tree_copy!(dir)

    # Two of its objects, which every other is built as (the whole library
    # three times took 20-30 s of the suite), each failing under the
    # library's -Werror with one of those warnings: -Wshadow, -pedantic.
    obj = fn cflags -> Path.join(nif_dir(copy, cflags), "gpa_report.o") end
    make = fn cflags -> make_in(copy, cflags, two_objects(nif_dir(copy, cflags))) end

    asan? = fn cflags ->
      {syms, 0} = System.cmd("nm", ["-u", Path.join(copy, obj.(cflags))])
      syms =~ "__asan_"
    end

    assert {out, 0} = make.("-O2 -g -pedantic -Wshadow -Wp,-DBEAM_ALLOC_PROBE=1")
    assert out =~ "-Wp,-DBEAM_ALLOC_PROBE=1"
    assert {out, 0} = make.("-O2 -g -pedantic -Wshadow -Wp,-DBEAM_ALLOC_PROBE=1")
    refute out =~ "src/gpa_report.c"
    # Flags a user's Makefile adds to an exported CFLAGS (CFLAGS += -fPIC
    # -I...), which beam_alloc.mk then passes on: kept as built (rebuilt,
    # the library was built twice at every compile, the Mix compiler's
    # CFLAGS and then the Makefile's).
    assert {out, 0} = make.("-O2 -g -pedantic -Wshadow -fPIC -I/tmp -DX=1")
    refute out =~ "src/gpa_report.c"
    assert {_, 0} = make.("-O1 -g -fsanitize=address")
    assert asan?.("-O1 -g -fsanitize=address")
    # Back without it: the objects of the first build, kept apart.
    assert {out, 0} = make.("-O2 -g")
    refute out =~ "src/gpa_report.c"
    refute asan?.("-O2 -g")
  end

  # A Nerves developer builds for the laptop (mix test) and for the board
  # (MIX_TARGET=rpi4: another CC, CFLAGS with -mcpu and --sysroot, the
  # target's ERTS_INCLUDE_DIR) all day. The library's objects had one
  # folder, keyed by CC and the link-time flags: each switch rebuilt all of
  # them (15-33 s each way, an audit), and a toolchain wrapper that keeps CC
  # and changes -march or --sysroot linked the other target's objects. Each
  # target's objects now have a folder of their own, kept across switches;
  # other flags (-O, -D, warnings) share one (the test above). Flags of the
  # host compiler here (-march levels), so that it runs without a cross one.
  test "the library's objects of other target flags are kept apart, and kept", %{dir: dir} do
    copy = tree_copy!(dir)
    make = fn cflags -> make_in(copy, cflags, two_objects(nif_dir(copy, cflags))) end
    dir_of = &nif_dir(copy, &1)

    {march, other} =
      if :erlang.system_info(:system_architecture) |> List.to_string() =~ "aarch64",
        do: {"-march=armv8-a", "-march=armv8.2-a"},
        else: {"-march=x86-64", "-march=x86-64-v2"}

    [a, b] = ["-O2 -g #{march}", "-O2 -g #{other}"]

    assert dir_of.(a) != dir_of.(b)
    assert {out, 0} = make.(a)
    assert out =~ "src/gpa_report.c"
    assert {out, 0} = make.(b)
    assert out =~ "#{other} " and out =~ "src/gpa_report.c"
    assert {out, 0} = make.(a)
    refute out =~ "src/gpa_report.c"

    # Every flag that changes what the code is for: --sysroot (either
    # spelling), --target, -m*; ERTS_INCLUDE_DIR (the target's erl_nif.h).
    base = dir_of.("-O2")

    for flags <- [
          "-O2 --sysroot /",
          "-O2 --sysroot=/",
          "-O2 --target=x86_64-linux-gnu",
          "-O2 -mtune=generic"
        ],
        do: assert(dir_of.(flags) != base, flags)

    assert nif_dir(copy, "-O2", ["ERTS_INCLUDE_DIR=/board/erts/include"]) != base

    assert dir_of.("-O3 -g -DX=1 -Wshadow -I/tmp") == base
  end

  # beam_alloc's own compiler (make nifs, which builds its driver and
  # symbolizer in a dependency) gave make the running VM's erl_nif.h
  # always: Nerves sets ERTS_INCLUDE_DIR to the board's (its OTP may
  # differ), and a board's build got the host's, and a library of another
  # key than the :beam_alloc compiler's (built twice).
  test "make nifs gets the environment's ERTS_INCLUDE_DIR", %{dir: dir} do
    File.write!(Path.join(dir, "Makefile"), "nifs:\n\t@echo \"erts=$(ERTS_INCLUDE_DIR)\"\n")
    project(dir, :mixc_erts_env, [])
    System.put_env("ERTS_INCLUDE_DIR", "/the/board/erts/include")

    out =
      capture_io(fn ->
        Mix.Project.in_project(:mixc_erts_env, dir, fn _ ->
          Mix.Tasks.Compile.BeamAllocMake.run([])
        end)
      end)

    assert out =~ "erts=/the/board/erts/include"
  end

  # The symbolizer links libdw when the compiler finds its header and the
  # library: the host's /usr/include said yes to a cross compiler too, and
  # the target's build of beam_alloc failed with "cannot find -ldw".
  test "the symbolizer asks the compiler in force for libdw", %{dir: dir} do
    args = [
      "-n",
      "--no-print-directory",
      "MIX_APP_PATH=#{dir}",
      "#{dir}/priv/beam_alloc_symbolize.so"
    ]

    env = [{"MAKEFLAGS", nil}, {"MAKELEVEL", nil}]

    if File.exists?("/usr/include/elfutils/libdwfl.h") do
      assert {out, 0} = System.cmd("make", args, env: [{"CFLAGS", "-O2"} | env])
      assert out =~ "-ldw"
    end

    nowhere = "-O2 --sysroot #{Path.join(dir, "empty-sysroot")}"
    assert {out, 0} = System.cmd("make", args, env: [{"CFLAGS", nowhere} | env])
    refute out =~ "-ldw"

    # A compiler that finds the host's header but not a libdw for its
    # target: Debian's cross compilers (aarch64-linux-gnu-gcc) search
    # /usr/include, and so does clang for another --target. -ldw exactly
    # when a library with the header links it.
    if System.find_executable("clang") do
      cross = "-O2 --target=aarch64-linux-gnu"
      src = Path.join(dir, "dw.c")
      File.write!(src, "#include <elfutils/libdwfl.h>\nvoid *f(void) { return dwfl_begin; }\n")

      {_, status} =
        System.cmd(
          "clang",
          String.split(cross) ++ ["-shared", "-fPIC", src, "-ldw", "-o", src <> ".so"],
          stderr_to_stdout: true
        )

      assert {out, 0} = System.cmd("make", args, env: [{"CC", "clang"}, {"CFLAGS", cross} | env])

      assert out =~ "-ldw" == (status == 0), out
    end
  end

  # The compiler links the library make names (make nif-lib-path): it took
  # make's last line for it, and a warning of make's after the path (clock
  # skew: files dated ahead of the clock, as a board without a clock or a
  # shared folder gives them) was linked as the library; and the path was
  # absolute in an echo's quotes, which a checkout under a folder with a
  # quote broke. A stand-in for the dependency: this Makefile and sources
  # through links, with this build's objects (their folder of the same
  # key) copied in and dated a minute ahead.
  test "links the library make names, after make's warnings, under a folder with a quote",
       %{dir: dir} do
    root = File.cwd!()

    # (ERTS_INCLUDE_DIR as the compiler finds it: the environment's, else
    # erl's, the running VM's.)
    make = fn goal ->
      System.cmd("make", ["--no-print-directory", "-s", goal], cd: root, stderr_to_stdout: true)
    end

    {_, 0} = make.("nif-lib-path")
    {folder, 0} = make.("nif-dir")
    folder = String.trim(folder)

    fake = Path.join(dir, "o'brien deps/beam_alloc")
    File.mkdir_p!(Path.join(fake, "build"))
    File.mkdir_p!(Path.join(fake, "c_src"))
    for f <- ~w(Makefile src include), do: File.ln_s!(Path.join(root, f), Path.join(fake, f))
    File.cp_r!(Path.join(root, folder), Path.join(fake, folder))
    ahead = System.os_time(:second) + 60

    for file <- Path.wildcard(Path.join([fake, folder, "**"])),
        File.regular?(file),
        do: File.touch!(file, ahead)

    project(fake, :beam_alloc, nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]])
    # (beam_alloc's own project: the compiler takes its folder for the
    # dependency's. Another module name than the real one's.)
    File.write!(Path.join(fake, "mix.exs"), """
    defmodule FakeBeamAllocRoot.MixProject do
      use Mix.Project
      def project do
        [app: :beam_alloc, version: "0.1.0",
         beam_alloc: [nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]]]]
      end
    end
    """)

    assert {{:ok, []}, lines, _} = compile(fake, :beam_alloc)
    assert Enum.any?(lines, &(&1 =~ "Clock skew")), Enum.join(lines, "\n")
    assert call_answer(so_path(fake, :beam_alloc, :tmp_nif)) == 42
  end

  # Goals that build no NIF code ask no erl for ERTS_INCLUDE_DIR (a second
  # of a 2-core machine at each make): the Makefile's list of them
  # (NIF_FREE_GOALS) named the folder of the NIF library without it, but
  # the NIF compile flags asked for it as the Makefile was read, so every
  # make ran erl. An erl first on PATH that notes each call.
  test "goals without NIF code run no erl; those with it do", %{dir: dir} do
    File.mkdir_p!(Path.join(dir, "bin"))
    log = Path.join(dir, "erl.log")
    erl = Path.join(dir, "bin/erl")
    File.write!(erl, "#!/bin/sh\necho \"$@\" >>'#{log}'\n")
    File.chmod!(erl, 0o755)

    env = [
      {"PATH", Path.join(dir, "bin") <> ":" <> System.get_env("PATH")},
      {"ERTS_INCLUDE_DIR", nil},
      {"MAKEFLAGS", nil},
      {"MAKELEVEL", nil}
    ]

    erl_calls = fn goal ->
      File.rm(log)
      {out, status} = System.cmd("make", ["-n", goal], env: env, stderr_to_stdout: true)
      assert status == 0, "make -n #{goal}: #{out}"
      File.exists?(log)
    end

    for goal <-
          ~w(clean format deps standalone-lib c-test c-test-san c-test-tsan c-test-valgrind
             build/test/run_tests build/libbeam_alloc_standalone.a fuzz-build fuzz-smoke fuzz
             bench-scratch bench-pause bench-sqlite-c rebar3-clean cross-test target-check),
        do: refute(erl_calls.(goal), goal)

    for goal <- ~w(nif-dir nif-lib lib), do: assert(erl_calls.(goal), goal)
  end

  # The compiler's flag probes (TLS_DIALECT's two and NO_ICF's two) ran as
  # the Makefile was read: every make paid them (make clean, make format,
  # each sub-make), and NO_ICF_CXX's two again at every C++ NIF. Asked now
  # in the recipes that use them, once a make. A cc and a g++ first on
  # PATH that note each call and take every flag (so that the dialect's
  # second probe is asked too; make -n runs nothing else), named as CC
  # and CXX: a CC=clang in the environment (make CC=clang mix-test passes
  # it on) ran no probe through them and failed the test.
  test "make asks the compiler about its flags only for what it builds, once", %{dir: dir} do
    File.mkdir_p!(Path.join(dir, "bin"))
    log = Path.join(dir, "cc.log")

    for name <- ~w(cc g++) do
      File.write!(Path.join(dir, "bin/#{name}"), "#!/bin/sh\necho \"$@\" >>'#{log}'\n")
      File.chmod!(Path.join(dir, "bin/#{name}"), 0o755)
    end

    env = [
      {"PATH", Path.join(dir, "bin") <> ":" <> System.get_env("PATH")},
      {"ERTS_INCLUDE_DIR", "/none"},
      {"CC", "cc"},
      {"CXX", "g++"},
      {"MAKEFLAGS", nil},
      {"MAKELEVEL", nil}
    ]

    cc_calls = fn args ->
      File.rm(log)
      {out, status} = System.cmd("make", ["-n" | args], env: env, stderr_to_stdout: true)
      assert status == 0, "make -n #{Enum.join(args, " ")}: #{out}"
      if File.exists?(log), do: String.split(File.read!(log), "\n", trim: true), else: []
    end

    for goal <- ~w(clean format deps rebar3-clean nif-dir c-test-san),
        do: assert(cc_calls.([goal]) == [], goal)

    # The test NIFs: C and C++, each probe once.
    probes =
      cc_calls.(["nifs", "MIX_ENV=test", "MIX_APP_PATH=#{dir}/app"])
      |> Enum.filter(&(&1 =~ "-c /dev/null"))

    assert Enum.any?(probes, &(&1 =~ "-mgeneral-regs-only")), inspect(probes)
    assert Enum.any?(probes, &(&1 =~ "-mtls-dialect=gnu2")), inspect(probes)
    assert Enum.any?(probes, &(&1 =~ "-x c++")), inspect(probes)
    assert probes == Enum.uniq(probes), Enum.join(probes, "\n")
  end

  # make cross-test installs the default aarch64 tools when missing
  # (scripts/ensure-deps cross); a compiler or qemu of the user's own
  # (AARCH64_CC, AARCH64_QEMU) was installed over, as root: it checked the
  # one given before. With one of the two given, the other's defaults were
  # not installed either: it asks for the part (cc, qemu) not given alone.
  # (make -n: the commands, none run but the sub-make's.)
  test "make cross-test installs the default tools of the AARCH64_CC or AARCH64_QEMU not given" do
    env = [{"MAKEFLAGS", nil}, {"MAKELEVEL", nil}]
    cross = fn vars -> System.cmd("make", ["-n", "cross-test" | vars], env: env) end
    given_cc = "AARCH64_CC=clang --target=aarch64-linux-gnu"
    given_qemu = "AARCH64_QEMU=/opt/qemu/bin/qemu-aarch64 -L /opt/sysroot"

    for {vars, install} <- [
          {[], "scripts/ensure-deps cross cc qemu\n"},
          {[given_cc], "scripts/ensure-deps cross qemu\n"},
          {[given_qemu], "scripts/ensure-deps cross cc\n"}
        ] do
      assert {out, 0} = cross.(vars)
      assert out =~ install, inspect({vars, hd(String.split(out, "\n"))})
    end

    assert {out, 0} = cross.([given_cc, given_qemu])
    refute out =~ "ensure-deps"
  end

  # The NIF library's folder is named by cksum's checksum of its key:
  # without cksum on PATH the name was build/nif- for every target, their
  # objects mixed, and nothing said so. (A PATH with nothing on it: make's
  # own probes, uname and the compiler's, come back empty.)
  # Goals that build nothing under it (clean, format, deps) need no
  # folder name: they were refused too, and make clean on a machine
  # without coreutils said to install cksum.
  test "make refuses to build without cksum, saying so; cleans without it", %{dir: dir} do
    File.mkdir_p!(dir)

    make_n = fn goal ->
      System.cmd(System.find_executable("make"), ["-n", goal],
        env: [
          {"PATH", dir},
          {"ERTS_INCLUDE_DIR", "/none"},
          {"MAKEFLAGS", nil},
          {"MAKELEVEL", nil}
        ],
        stderr_to_stdout: true
      )
    end

    {out, status} = make_n.("nif-dir")
    assert status != 0, out
    assert out =~ "cksum", out
    refute out =~ "nif-'", out

    for {goal, command} <- [
          {"clean", "rm -rf build"},
          {"format", "clang-format -i"},
          {"deps", "scripts/ensure-deps"}
        ] do
      {out, status} = make_n.(goal)
      assert status == 0, "make -n #{goal}: #{out}"
      assert out =~ command, out
    end
  end

  # With no locale set (a fresh container) the VM took file names as latin1
  # and make test failed on a project under a path with an e-acute: make
  # gives its commands a UTF-8 locale then, and keeps one the environment
  # sets.
  test "make runs its commands in a UTF-8 locale where none is set" do
    probe = fn env ->
      System.cmd(
        System.find_executable("make"),
        [
          "-s",
          "--no-print-directory",
          "--eval",
          "lang-probe: ; @echo \"[$$LANG]\"",
          "lang-probe"
        ],
        env:
          [{"LANG", nil}, {"LC_ALL", nil}, {"LC_CTYPE", nil}, {"MAKEFLAGS", nil}] ++
            env,
        stderr_to_stdout: true
      )
    end

    assert {"[C.UTF-8]\n", 0} = probe.([])
    assert {"[en_US.UTF-8]\n", 0} = probe.([{"LANG", "en_US.UTF-8"}])
    assert {"[]\n", 0} = probe.([{"LC_ALL", "C"}])
  end

  # scripts/ensure-deps took any argument but `cross` for the host's
  # install, so a typo (`ensure-deps corss`) installed the host's packages
  # and said nothing. An apt-get and a sudo first on PATH that note each
  # call: nothing is installed, whichever way the script goes.
  test "scripts/ensure-deps refuses an argument it does not know", %{dir: dir} do
    bin = Path.join(dir, "bin")

    for args <- [["corss"], ["host"], ["cross", "extra"], ["cc"], ["cross", "cc", "cross"]] do
      {out, status, installs} = ensure_deps_stubbed(bin, %{}, args)
      assert status != 0, inspect(args)
      assert out =~ "usage: scripts/ensure-deps [cross [cc] [qemu]]", inspect(args)
      assert installs == "", inspect({args, installs})
    end

    # The parts make cross-test asks for (what the stubs install is not
    # looked at: a machine with the tools installs nothing).
    for args <- [["cross", "cc"], ["cross", "qemu"], ["cross", "cc", "qemu"]] do
      {out, status, _} = ensure_deps_stubbed(bin, %{}, args)
      assert status == 0, inspect({args, out})
    end
  end

  # scripts/ensure-deps asked for libclang-rt-14-dev and libc++-14-dev,
  # Debian 12's LLVM, whichever clang there was: on Debian 13 (clang 19, no
  # LLVM 14) make demo and make test failed at the install, and any
  # llvm-*'s runtime counted as clang's own (found running the README's
  # make demo on a fresh Debian 13). A clang 19 first on PATH, with no
  # runtime in its resource folder and no libc++ beside it, and an
  # apt-get and a sudo that note each call: its own version's are asked for.
  # The same with a clang that also writes to stderr and succeeds (ld.so's
  # word on an LD_PRELOAD it cannot load, clang's own on
  # CCC_OVERRIDE_OPTIONS): its version was read from stdout and stderr
  # together, so it "failed" and nothing was asked for (found in review).
  for {kind, stderr} <- [
        {"", ""},
        {" that writes to stderr too",
         "echo \"ERROR: ld.so: object 'x.so' from LD_PRELOAD cannot be preloaded: ignored.\" >&2"}
      ] do
    test "scripts/ensure-deps asks for the runtimes and libc++ of the clang there is#{kind}",
         %{dir: dir} do
      File.mkdir_p!(Path.join(dir, "llvm-19/lib/clang/19/lib"))

      clang = """
      #{unquote(stderr)}
      case "$1" in
        -dumpversion) echo 19.1.7 ;;
        -print-resource-dir) echo '#{dir}/llvm-19/lib/clang/19' ;;
        *) exit 1 ;;
      esac
      """

      {out, status, installs} =
        ensure_deps_stubbed(Path.join(dir, "llvm-19/bin"), %{"clang" => clang}, [])

      assert status == 0, out
      refute out =~ "failed", out

      for package <- ~w(libclang-rt-19-dev libc++-19-dev libc++abi-19-dev) do
        assert installs =~ " #{package}", inspect({package, out, installs})
      end

      refute installs =~ "-14-dev", installs
    end
  end

  # The look for libc++ went beside the clang on PATH: a wrapper there
  # (ccache's /usr/lib/ccache/clang, a script in /usr/local/bin) found none
  # and every run installed libc++ again (sudo's password for nothing;
  # found in review). A script clang first on PATH running the real one,
  # whose libc++ make deps installed: ensure-deps asks for no libc++.
  test "scripts/ensure-deps finds the libc++ of a clang behind a wrapper", %{dir: dir} do
    real = System.find_executable("clang")
    clang = "exec '#{real}' \"$@\""

    {out, status, installs} =
      ensure_deps_stubbed(Path.join(dir, "wrapper/bin"), %{"clang" => clang}, [])

    assert status == 0, out
    refute installs =~ "libc++", inspect({out, installs})
  end

  # The runtimes' and libc++'s packages follow the clang on PATH: one newer
  # than the archive's LLVMs (a clang 21 from elsewhere on Debian 12) made
  # apt-get stop with its own "Unable to locate package" and exit 100,
  # naming neither clang nor its version (found in review). An apt-cache
  # that knows no -21- package: ensure-deps names the packages and the
  # clang it found, installs nothing and fails.
  test "scripts/ensure-deps says which clang's packages the archive lacks", %{dir: dir} do
    File.mkdir_p!(Path.join(dir, "llvm-21/lib/clang/21/lib"))

    stubs = %{
      "clang" => """
      case "$1" in
        -dumpversion) echo 21.1.2 ;;
        -print-resource-dir) echo '#{dir}/llvm-21/lib/clang/21' ;;
        *) exit 1 ;;
      esac
      """,
      "apt-cache" => """
      case "$2" in
        *-21-dev) echo "E: No packages found" >&2; exit 100 ;;
      esac
      """
    }

    {out, status, installs} = ensure_deps_stubbed(Path.join(dir, "llvm-21/bin"), stubs, [])

    assert status != 0, out
    assert out =~ "clang 21", out

    for package <- ~w(libclang-rt-21-dev libc++-21-dev libc++abi-21-dev) do
      assert out =~ package, inspect({package, out})
    end

    refute installs =~ "install", installs
  end

  # A clang that fails to give its version (a wrapper whose target is gone,
  # a broken install) made ensure-deps ask for no runtimes and no libc++,
  # saying nothing: the sanitizer and C++ builds failed later instead
  # (found in review). It says clang failed, and asks for none.
  test "scripts/ensure-deps says so when clang cannot give its version", %{dir: dir} do
    clang = "echo 'clang: error while loading shared libraries: libLLVM.so.21' >&2; exit 127"

    {out, _status, installs} =
      ensure_deps_stubbed(Path.join(dir, "broken/bin"), %{"clang" => clang}, [])

    assert out =~ "clang -dumpversion", out
    assert out =~ "libLLVM.so.21", out
    refute installs =~ ~r/libclang-rt|libc\+\+/, installs
  end

  # scripts/ensure-deps run with ARGS and bin first on PATH, holding an
  # apt-get and a sudo that note each call (nothing is installed, whichever
  # way the script goes), an apt-cache that knows every package, and the
  # given stubs (tool => shell body): its output, exit status and the calls
  # noted ("" for none).
  defp ensure_deps_stubbed(bin, stubs, args) do
    File.mkdir_p!(bin)
    log = Path.join(bin, "apt.log")
    File.rm(log)
    noting = for tool <- ~w(apt-get sudo), into: %{}, do: {tool, "echo #{tool} \"$@\" >>'#{log}'"}

    for {tool, body} <- noting |> Map.put("apt-cache", "exit 0") |> Map.merge(stubs) do
      File.write!(Path.join(bin, tool), "#!/bin/sh\n" <> body <> "\n")
      File.chmod!(Path.join(bin, tool), 0o755)
    end

    env = [{"PATH", bin <> ":" <> System.get_env("PATH")}]

    {out, status} =
      System.cmd(Path.expand("scripts/ensure-deps"), args, env: env, stderr_to_stdout: true)

    {out, status, if(File.exists?(log), do: File.read!(log), else: "")}
  end

  # A folder holding a copy of this Erlang's erl_nif.h and the rest of its
  # include folder, under dir: another ERTS_INCLUDE_DIR, standing for
  # another Erlang/OTP.
  defp other_otp!(dir, copy) do
    {erts, 0} = make_in(copy, "-O2", ["-s", "--eval", "show:;@echo $(ERTS_INCLUDE_DIR)", "show"])
    other = Path.join(dir, "other-otp/include")
    File.mkdir_p!(other)
    File.cp_r!(String.trim(erts), other)
    other
  end

  # make (a function of make's added arguments) once, for the other Erlang's
  # ERTS_INCLUDE_DIR, back, and again: rebuilt? holds of the output of each
  # switch, built_any? of none of the last make's.
  defp assert_built_again_for_each_erts(make, other, rebuilt?, built_any?) do
    assert {_, 0} = make.([])
    assert {out, 0} = make.(["ERTS_INCLUDE_DIR=#{other}"])
    assert rebuilt?.(out), out
    assert {out, 0} = make.([])
    assert rebuilt?.(out), out
    assert {out, 0} = make.([])
    refute built_any?.(out), out
  end

  # Writes into dir a project whose NIF (answer/0: BEAM_ALLOC_PROBE, 21
  # unless a header defines it) beam_alloc.mk builds with the checkout copy;
  # gives a function that runs make priv/tmp_nif.so there with make's
  # variables vars (env added to the environment; the command after the
  # words of as, which run it as another user).
  defp probe_project!(dir, copy, env, as \\ []) do
    File.write!(Path.join(dir, "c_src/probe_nif.c"), """
    #include <beam_alloc_nif.h>
    #ifndef BEAM_ALLOC_PROBE
    #define BEAM_ALLOC_PROBE 21
    #endif
    BEAM_NIF(answer) { return enif_make_int(env, BEAM_ALLOC_PROBE); }
    static ErlNifFunc funcs[] = {{"answer", 0, answer, 0}};
    BEAM_NIF_INIT(tmp_nif, funcs, NULL, NULL, NULL)
    """)

    File.write!(Path.join(dir, "Makefile"), """
    include #{copy}/beam_alloc.mk
    priv/tmp_nif.so: c_src/probe_nif.c $(BEAM_ALLOC_LIB)
    \t$(BEAM_ALLOC_BUILD_NIF)
    """)

    [command | args] = as ++ ["make", "--no-print-directory", "-j2", "priv/tmp_nif.so"]

    fn vars ->
      System.cmd(command, args ++ vars,
        cd: dir,
        env: [{"MAKEFLAGS", nil}, {"MAKELEVEL", nil} | env],
        stderr_to_stdout: true
      )
    end
  end

  # Puts this checkout's NIF library objects for cflags' key (built for
  # the suite's own NIFs) into the copy, their times kept, so that make
  # finds them up to date: the tests that need the library but not its
  # build took a whole build each (4-8 s on a 2-core machine). Nothing
  # when the checkout has none of that key: make builds it then. (These
  # tests build with -O0, which shares the key: what they check is which
  # files make builds again, which no optimisation changes, and -O0
  # builds the library in two thirds of the time.)
  defp prebuilt_library!(copy, cflags) do
    folder = nif_dir(copy, cflags)
    ours = Path.join(File.cwd!(), folder)

    if File.dir?(ours) do
      File.mkdir_p!(Path.dirname(Path.join(copy, folder)))
      {_, 0} = System.cmd("cp", ["-a", ours, Path.join(copy, folder)])
    end

    :ok
  end

  # A copy of this tree in dir, for make to build in (not the checkout).
  defp tree_copy!(dir) do
    copy = Path.join(dir, "beam_alloc")
    {_, 0} = System.cmd(Path.join(File.cwd!(), "scripts/copy-tree"), [copy])
    copy
  end

  # make GOALS in the copy with CFLAGS, as a dependency's build runs it.
  defp make_in(copy, cflags, goals) do
    System.cmd("make", ["--no-print-directory" | goals],
      cd: copy,
      env: [{"CFLAGS", cflags}, {"MAKEFLAGS", nil}, {"MAKELEVEL", nil}],
      stderr_to_stdout: true
    )
  end

  # The folder of the NIF library's objects for these CFLAGS (make says).
  defp nif_dir(copy, cflags, vars \\ []) do
    {out, 0} = make_in(copy, cflags, ["-s", "nif-dir" | vars])
    String.trim(out)
  end

  # Two of the library's objects in folder, which every other is built as
  # (the whole library, several times, took 20-30 s of the suite).
  defp two_objects(folder),
    do: [Path.join(folder, "gpa_report.o"), Path.join(folder, "nif/glue.o")]

  # -MMD writes a dependency file in make's syntax: # as \\#, $ as $$. Read
  # without unescaping, a project under such a folder never found its
  # files, and every compile built everything again.
  test "a project under a path with #, $, a space and a non-ASCII letter builds once",
       %{dir: dir} do
    dir = Path.join(dir, "c#1 $x dé")
    File.mkdir_p!(Path.join(dir, "c_src"))
    app = project(dir, :mixc_odd_path, nifs: [tmp_nif: ["c_src/tmp_nif.c", "c_src/twice.cpp"]])
    assert {{:ok, []}, _, _} = compile(dir, app)
    assert {{:noop, []}, [], _} = compile(dir, app)

    File.write!(Path.join(dir, "c_src/answer.h"), "#define ANSWER_HALF 4\n")
    assert {{:ok, _}, lines, _} = compile(dir, app)
    assert "beam_alloc: compiling c_src/tmp_nif.c (tmp_nif)" in lines
    refute "beam_alloc: compiling c_src/twice.cpp (tmp_nif)" in lines
    assert call_answer(so_path(dir, app, :tmp_nif)) == 8
  end

  # The appup step (Mix.Tasks.Compile.BeamAllocAppup) rewrote the appup
  # only when the .app or scripts/appup was newer: a module that became a
  # gen_server (its beam compiled again, the module list and the version
  # the same) kept its load_module until a clean build. It follows the
  # beams now, as make's rule does; it first found them with
  # Path.wildcard, which reads the whole path as a pattern: under a folder
  # named with [ or { it found none.
  test "the appup step follows the beams under a folder whose name has [ and {", %{dir: dir} do
    dir = Path.join(dir, "p[1] {a,b}")
    File.mkdir_p!(Path.join(dir, "scripts"))
    File.cp!("scripts/appup", Path.join(dir, "scripts/appup"))

    # (Its own app name: Mix keeps a project by its app's name, and
    # another test's beam_alloc dependency would be the one found.)
    mix_exs!(dir, :mixc_appup_glob, [])

    in_project = fn f -> Mix.Project.in_project(:mixc_appup_glob, dir, fn _ -> f.() end) end
    run = fn -> in_project.(fn -> Mix.Tasks.Compile.BeamAllocAppup.run([]) end) end
    ebin = in_project.(&Mix.Project.compile_path/0)
    File.mkdir_p!(ebin)
    src = Path.join(dir, "mixc_appup_glob.erl")
    File.write!(src, "-module(mixc_appup_glob).\n")
    {:ok, _} = :compile.file(to_charlist(src), outdir: to_charlist(ebin))
    app = Path.join(ebin, "beam_alloc.app")
    File.write!(app, ~s|{application,beam_alloc,[{vsn,"0.1.0"},{modules,[mixc_appup_glob]}]}.\n|)
    assert {:ok, []} = run.()

    appup = Path.join(ebin, "beam_alloc.appup")
    written = File.read!(appup)
    beam = Path.join(ebin, "mixc_appup_glob.beam")
    t = File.stat!(beam, time: :posix).mtime
    File.write!(appup, "stale.\n")
    File.touch!(appup, t + 1)
    File.touch!(app, t)
    File.touch!(beam, t + 2)
    assert {:ok, []} = run.()
    assert File.read!(appup) == written
  end

  # Its own make step's clean (mix clean with beam_alloc a dependency)
  # found priv/*.so with Path.wildcard too: under such a folder it
  # removed nothing.
  test "the make step's clean removes priv's libraries under a folder whose name has [ and {", %{
    dir: dir
  } do
    dir = Path.join(dir, "p[1] {a,b}")
    File.mkdir_p!(dir)
    mix_exs!(dir, :mixc_clean_glob, [])

    Mix.Project.in_project(:mixc_clean_glob, dir, fn _ ->
      priv = Path.join(Mix.Project.app_path(), "priv")
      File.mkdir_p!(priv)
      for f <- ["a.so", "b.so", "keep.txt"], do: File.write!(Path.join(priv, f), "")
      Mix.Tasks.Compile.BeamAllocMake.clean()
      assert File.ls!(priv) == ["keep.txt"]
    end)
  end
end
