defmodule Mix.Tasks.Compile.BeamAlloc do
  @shortdoc "Builds the project's NIFs (C and C++) against beam_alloc"

  @moduledoc """
  Builds the NIF libraries of a Mix project against beam_alloc, with
  beam_alloc as a path or git dependency. In `mix.exs`:

      def project do
        [
          app: :my_app,
          compilers: [:beam_alloc] ++ Mix.compilers(),
          beam_alloc: [nifs: [my_nif: ["c_src/my_nif.c"]]],
          deps: [{:beam_alloc, path: "../beam_alloc"}]
        ]
      end

  `mix compile` then builds `priv/my_nif.so` in the application's build
  directory (`_build/<env>/lib/my_app/priv/my_nif.so`, which is what
  `:code.priv_dir(:my_app)` and `use BeamAlloc.Nif, library: "my_nif"`
  find), from the sources given, linked with beam_alloc's library
  (`libbeam_alloc.a` of the dependency, built first when missing or
  out of date, in a folder of its `build/` per compiler, target flags and
  `ERTS_INCLUDE_DIR`: switching between the host and a board's toolchain
  builds it again for neither).

  Every object is compiled with `-g` (so that reports can name source
  lines), `-fno-omit-frame-pointer` (so that they can give the callers of
  an allocation), `-fno-optimize-sibling-calls` (so that a function whose
  last act is an allocator call keeps its frame in them: `cflags`, which
  come after, may take it back with `-foptimize-sibling-calls`), flags
  that keep the compiler from merging identical
  code (GCC's `-fno-ipa-icf -fno-crossjumping -fno-tree-tail-merge`, or
  clang's `-mllvm -enable-tail-merge=false -mllvm
  -simplifycfg-sink-common=false`: otherwise NIFs with identical code, or
  identical calls that end two branches of one function, share one
  address, and a report names the other one's line), `-fPIC`,
  `-fvisibility=hidden` and the include directories of
  beam_alloc and of the running VM's `erl_nif.h`; the shared object is
  linked with `-Wl,--exclude-libs,ALL`, so none of beam_alloc's symbols is
  exported from it (only `nif_init` and the fault-injection hook).

  Objects go to `_build/<env>/lib/my_app/beam_alloc/obj/`, with the headers
  each one includes: a source is recompiled when its contents, a header it
  includes, or its command line changed (by content, not modification
  time), and a library relinked only when one of its objects or
  beam_alloc's library changed. `mix compile --force` rebuilds
  everything; `mix clean` removes what this compiler built.

  ## Options (under `:beam_alloc`)

    * `:nifs` - a keyword list of NIF libraries: each name (the `.so` is
      `priv/<name>.so`) with either its list of sources or a keyword list
      of `:sources` and the per-library `:cflags`, `:cxxflags`, `:ldflags`
      and `:libs`
      below. Sources ending in `.c` are C, in `.cc`, `.cpp`, `.cxx`, `.c++`
      or `.C` C++; a library with any C++ source is linked by the C++
      compiler.
    * `:cflags` - extra flags for every compilation (C and C++), after
      `CFLAGS`/`CXXFLAGS`, e.g. `["-Wall", "-Werror", "-DNDEBUG"]`.
    * `:cxxflags` - extra flags for C++ sources only, after `:cflags`,
      e.g. `["-std=c++20", "-fno-rtti"]` (flags a C compiler refuses).
    * `:ldflags` - extra flags for every link, e.g. `["-L/opt/lib"]`.
    * `:libs` - libraries to link, after beam_alloc's: `["sqlite3"]` is
      `-lsqlite3`; an entry starting with `-` or ending in `.a`/`.so` is
      passed as it is.
    * `:make` - run the project's own Makefile instead of (or besides)
      `:nifs`: `true`, or a keyword list of `:target` (default: make's
      default goal), `:makefile`, `:dir` (default: the project directory)
      and `:args`. See "Your own Makefile" below.

  `:cflags`, `:cxxflags`, `:ldflags` and `:libs` are for the `:nifs`
  builds: a Makefile sets its own (given with `make:` alone, they fail the
  build rather than be ignored).

  Example with everything:

      beam_alloc: [
        nifs: [
          my_nif: ["c_src/my_nif.c", "c_src/util.cpp"],
          db_nif: [sources: ["c_src/db_nif.c"], libs: ["sqlite3"]]
        ],
        cflags: ["-Wall", "-Wextra"],
        cxxflags: ["-std=c++20"],
        ldflags: []
      ]

  ## Environment

    * `CC` (default `cc`) and `CXX` (default `c++`): the compilers;
    * `CFLAGS` (default `-O2`), `CXXFLAGS` (default `-O2`), `LDFLAGS`:
      added to every compilation or link (`-g` stays on); C++ is compiled
      with `-std=gnu++17` before them (`<beam_alloc.hpp>` needs C++17,
      which clang++ 14 does not default to; a `-std` of yours wins);
    * `ERTS_INCLUDE_DIR`: where `erl_nif.h` is (default: the running VM's).

  ## Your own Makefile

  With `make: true` (or `make: [target: "nifs"]`), the compiler runs make
  in the project directory, the elixir_make way, with these variables in
  the environment:

    * `MIX_APP_PATH`, `MIX_ENV`, `MIX_TARGET`, `MIX_BUILD_PATH`,
      `MIX_COMPILE_PATH`, `MIX_CONSOLIDATION_PATH`, `MIX_DEPS_PATH`,
      `MIX_MANIFEST_PATH`: write NIFs to `$(MIX_APP_PATH)/priv/` (or, as
      with elixir_make, to the project's `priv/`: when make creates that
      folder, the app's `priv/` becomes a link to it);
    * `ERTS_INCLUDE_DIR`: the directory of `erl_nif.h`; `ERL_EI_INCLUDE_DIR`,
      `ERL_EI_LIBDIR`, `ERL_INTERFACE_INCLUDE_DIR`, `ERL_INTERFACE_LIB_DIR`:
      erl_interface's (a Makefile written for elixir_make runs as it was);
    * `BEAM_ALLOC_DIR`, `BEAM_ALLOC_INCLUDE_DIR`, `BEAM_ALLOC_LIB`
      (`libbeam_alloc.a`, already built), `BEAM_ALLOC_CFLAGS` and
      `BEAM_ALLOC_LDFLAGS` (what any NIF built on beam_alloc needs: its
      include directories, the flags above for `CC`, and link flags; not
      `:cflags` and the like),
      and `BEAM_ALLOC_MK`, the path
      of `beam_alloc.mk`, which a Makefile can include instead
      (`include $(BEAM_ALLOC_MK)`).

  The paths are absolute, but for one holding a space, a quote or another
  character make or the shell takes: that one is relative to make's
  directory.

  Set `MAKE` to use another make. A failing make fails the compilation.
  """

  use Mix.Task.Compiler

  # Run in each app of an umbrella: without it, Mix runs a compiler of a
  # child app in the umbrella's root project, whose mix.exs has no
  # :beam_alloc ("nothing to build"), and `mix compile` at the root failed.
  @recursive true

  # Where this file was compiled from: the dependency's source directory,
  # for path and git dependencies alike (a fallback for deps_paths/0).
  @root Path.expand("../../..", __DIR__)

  @cxx_exts ~w(.cc .cpp .cxx .C .c++)
  # The flag options, global and per NIF (lists of strings, default []).
  @flag_options [:cflags, :cxxflags, :ldflags, :libs]
  @c_exts ~w(.c)

  @impl Mix.Task.Compiler
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, switches: [force: :boolean])
    config = options!(Mix.Project.config())
    root = beam_alloc_root()
    erts = erts_include_dir!()
    # beam_alloc's library is built with CC: a missing compiler is said
    # here, not as make's "cc: not found" (Error 127) from inside it.
    _ = compiler!(:c)
    library = ensure_library!(root, erts)

    make_status = if config.make, do: run_make!(config.make, root, erts, library), else: :noop

    {statuses, diagnostics} =
      config.nifs
      |> Enum.map(&build_nif(&1, config, root, erts, library, opts[:force] || false))
      |> Enum.unzip()

    diagnostics = List.flatten(diagnostics)
    statuses = [make_status | statuses]

    cond do
      :error in statuses -> {:error, diagnostics}
      :ok in statuses -> {:ok, diagnostics}
      true -> {:noop, diagnostics}
    end
  end

  @impl Mix.Task.Compiler
  def manifests, do: []

  @impl Mix.Task.Compiler
  def clean do
    config = options!(Mix.Project.config())
    File.rm_rf!(obj_root())

    for {name, _} <- config.nifs do
      File.rm(so_path(name))
    end

    :ok
  end

  # --- Options ----------------------------------------------------------------

  defp options!(project) do
    opts = Keyword.get(project, :beam_alloc, [])

    unless Keyword.keyword?(opts) do
      Mix.raise(
        "beam_alloc: expected :beam_alloc in mix.exs to be a keyword list, got: #{inspect(opts)}"
      )
    end

    once!(opts, "under :beam_alloc")

    case Keyword.keys(opts) -- [:nifs, :make | @flag_options] do
      [] ->
        :ok

      unknown ->
        Mix.raise(
          "beam_alloc: unknown option(s) #{Enum.map_join(unknown, ", ", &inspect/1)} under :beam_alloc " <>
            "(known: #{Enum.map_join([:nifs, :make | @flag_options], ", ", &inspect/1)})"
        )
    end

    nifs = Keyword.get(opts, :nifs, [])

    unless Keyword.keyword?(nifs) do
      Mix.raise(
        "beam_alloc: expected :nifs to be a keyword list of NIF names and their sources, " <>
          "e.g. nifs: [my_nif: [\"c_src/my_nif.c\"]], got: #{inspect(nifs)}"
      )
    end

    Enum.each(Keyword.keys(nifs), &nif_name!/1)

    # Two entries of one name build one priv/<name>.so, the last silently.
    case Keyword.keys(nifs) -- Enum.uniq(Keyword.keys(nifs)) do
      [] ->
        :ok

      [name | _] ->
        Mix.raise(
          "beam_alloc: NIF #{name} is given twice under :nifs (each builds priv/#{name}.so): " <>
            "list every source of it in one entry"
        )
    end

    if nifs == [] and !opts[:make] do
      Mix.raise(
        "beam_alloc: nothing to build: give :nifs (e.g. beam_alloc: [nifs: [my_nif: [\"c_src/my_nif.c\"]]]) " <>
          "or make: true under :beam_alloc in mix.exs"
      )
    end

    flags = for key <- @flag_options, opts[key] not in [nil, []], do: key

    if nifs == [] and flags != [] do
      Mix.raise(
        "beam_alloc: #{Enum.map_join(flags, ", ", &inspect/1)} under :beam_alloc apply to " <>
          ":nifs builds only, and there are none: with make:, set the flags in your Makefile " <>
          "(it gets BEAM_ALLOC_CFLAGS and BEAM_ALLOC_LDFLAGS, see mix help compile.beam_alloc)"
      )
    end

    Map.merge(flag_options!(opts), %{
      nifs: Enum.map(nifs, &(&1 |> nif_options!() |> no_source_twice!())),
      make: make_options!(Keyword.get(opts, :make, false))
    })
  end

  # An option given twice: Keyword.get took the first and dropped the
  # other without a word (cflags: [...], cflags: [...]; bad-arguments hunt).
  defp once!(opts, where) do
    case Keyword.keys(opts) -- Enum.uniq(Keyword.keys(opts)) do
      [] -> :ok
      [key | _] -> Mix.raise("beam_alloc: option #{inspect(key)} is given twice #{where}")
    end
  end

  defp flag_options!(opts), do: Map.new(@flag_options, &{&1, string_list!(opts, &1)})

  # The name is the file priv/<name>.so: a plain file name, not a path
  # (:"../x" wrote outside priv/).
  defp nif_name!(name) do
    unless Atom.to_string(name) =~ ~r/\A[A-Za-z0-9_][A-Za-z0-9_.-]*\z/ do
      Mix.raise(
        "beam_alloc: NIF name #{inspect(name)} under :nifs is not a plain file name " <>
          "(letters, digits, _, . and -, not starting with .): it names priv/<name>.so"
      )
    end
  end

  # A source listed twice is compiled twice, and the link fails with
  # "multiple definition" of everything in it.
  defp no_source_twice!({name, %{sources: srcs}} = nif) do
    case srcs -- Enum.uniq_by(srcs, &Path.expand/1) do
      [] ->
        nif

      [src | _] ->
        Mix.raise("beam_alloc: NIF #{name}: source #{src} is listed twice under :sources")
    end
  end

  defp nif_options!({name, sources}) when is_list(sources) and sources != [] do
    # (An improper list is neither: Keyword.keyword?/1 below says so.)
    if not List.improper?(sources) and Enum.all?(sources, &is_binary/1) do
      {name, Map.put(flag_options!([]), :sources, sources)}
    else
      unless Keyword.keyword?(sources) do
        Mix.raise(
          "beam_alloc: NIF #{name}: expected a list of source files or a keyword list " <>
            "with :sources, got: #{inspect(sources)}"
        )
      end

      once!(sources, "for NIF #{name}")

      case Keyword.keys(sources) -- [:sources | @flag_options] do
        [] -> :ok
        unknown -> Mix.raise("beam_alloc: NIF #{name}: unknown option(s) #{inspect(unknown)}")
      end

      srcs = string_list!(sources, :sources)
      if srcs == [], do: Mix.raise("beam_alloc: NIF #{name}: no :sources given")

      {name, Map.put(flag_options!(sources), :sources, srcs)}
    end
  end

  defp nif_options!({name, other}) do
    Mix.raise(
      "beam_alloc: NIF #{name}: expected a non-empty list of source files, got: #{inspect(other)}"
    )
  end

  defp make_options!(false), do: nil
  defp make_options!(nil), do: nil
  defp make_options!(true), do: make_options!([])

  defp make_options!(opts) when is_list(opts) do
    unless Keyword.keyword?(opts) do
      Mix.raise("beam_alloc: expected :make to be true or a keyword list, got: #{inspect(opts)}")
    end

    once!(opts, "under :make")

    case Keyword.keys(opts) -- [:target, :makefile, :dir, :args] do
      [] -> :ok
      unknown -> Mix.raise("beam_alloc: unknown :make option(s) #{inspect(unknown)}")
    end

    %{
      target: make_string!(opts, :target, nil),
      makefile: make_string!(opts, :makefile, nil),
      dir: make_string!(opts, :dir, "."),
      args: string_list!(opts, :args)
    }
  end

  defp make_options!(other),
    do:
      Mix.raise("beam_alloc: expected :make to be true or a keyword list, got: #{inspect(other)}")

  # A :make option that names one thing (a target, a file, a directory): a
  # string, or a charlist as before this was checked.
  defp make_string!(opts, key, default) do
    value = Keyword.get(opts, key, default)

    cond do
      is_binary(value) or value == default ->
        value

      is_list(value) and value != [] and :io_lib.printable_unicode_list(value) ->
        List.to_string(value)

      true ->
        Mix.raise(
          "beam_alloc: expected :make option #{inspect(key)} to be a string, got: " <>
            inspect(value)
        )
    end
  end

  defp string_list!(opts, key) do
    case Keyword.get(opts, key, []) do
      list when is_list(list) ->
        if not List.improper?(list) and Enum.all?(list, &is_binary/1) do
          list
        else
          Mix.raise(
            "beam_alloc: expected #{inspect(key)} to be a list of strings, got: #{inspect(list)}"
          )
        end

      other ->
        Mix.raise(
          "beam_alloc: expected #{inspect(key)} to be a list of strings, got: #{inspect(other)}"
        )
    end
  end

  # --- Where things are ---------------------------------------------------------

  defp beam_alloc_root do
    cond do
      Mix.Project.config()[:app] == :beam_alloc -> File.cwd!()
      path = Mix.Project.deps_paths()[:beam_alloc] -> path
      true -> @root
    end
  end

  defp erts_include_dir! do
    dir =
      case System.get_env("ERTS_INCLUDE_DIR") do
        dir when dir in [nil, ""] ->
          Path.join([
            List.to_string(:code.root_dir()),
            "erts-#{:erlang.system_info(:version)}",
            "include"
          ])

        dir ->
          dir
      end

    unless File.exists?(Path.join(dir, "erl_nif.h")) do
      Mix.raise("""
      beam_alloc: erl_nif.h not found in #{dir}.

      Install the Erlang development headers (on Debian: apt-get install erlang-dev) \
      or set ERTS_INCLUDE_DIR to the directory that has erl_nif.h.
      """)
    end

    dir
  end

  defp obj_root, do: Path.join([Mix.Project.app_path(), "beam_alloc", "obj"])
  defp so_path(name), do: Path.join([Mix.Project.app_path(), "priv", "#{name}.so"])

  # --- beam_alloc's own library ---------------------------------------------------

  # Builds (or checks) libbeam_alloc.a in the dependency with its own
  # Makefile: a path dependency's sources may have changed since it was
  # compiled. Silent when it is up to date. The library is the one of this
  # CC, target flags and ERTS_INCLUDE_DIR, in a folder of its own (make
  # names it, relative to root, on a line of its own): the host's and a
  # board's are both kept, and a switch between them builds nothing (it
  # built the whole library, and the same CC with other -march or
  # --sysroot linked the other's). Not make's last line: its warnings may
  # come after ("Clock skew detected", for files dated ahead), and one
  # was linked as the library.
  defp ensure_library!(root, erts) do
    make = make_executable!()

    {out, status} =
      System.cmd(make, ["--no-print-directory", "-C", root, "nif-lib-path"],
        env: [{"ERTS_INCLUDE_DIR", erts}],
        stderr_to_stdout: true
      )

    {named, shown} =
      out
      |> String.split("\n", trim: true)
      |> Enum.split_with(&Regex.match?(~r{\A\S+/libbeam_alloc\.a\z}, &1))

    if shown != [], do: Mix.shell().info(Enum.join(shown, "\n"))

    if status != 0 or named == [] do
      Mix.raise(
        "beam_alloc: could not build beam_alloc's library in #{root} " <>
          "(\"#{make} nif-lib-path\" exited with #{status}" <>
          if(status == 0, do: " naming no library", else: "") <> "); see the output above"
      )
    end

    Path.expand(List.last(named), root)
  end

  defp make_executable! do
    make = System.get_env("MAKE", "make")

    System.find_executable(make) ||
      Mix.raise("""
      beam_alloc: could not find #{inspect(make)} in PATH, which builds beam_alloc's library.

      Install make (on Debian: apt-get install make) or set MAKE to its name.
      """)
  end

  # --- The user's Makefile ---------------------------------------------------------

  defp run_make!(make_opts, root, erts, library) do
    make = make_executable!()
    dir = Path.expand(make_opts.dir)

    args =
      ["--no-print-directory"] ++
        if(make_opts.makefile, do: ["-f", make_opts.makefile], else: []) ++
        make_opts.args ++ List.wrap(make_opts.target)

    priv? = File.dir?("priv")
    File.mkdir_p!(Path.join(Mix.Project.app_path(), "priv"))
    at = &make_path(&1, dir)
    root = at.(root)

    env =
      elixir_make_env(at) ++
        [
          {"ERTS_INCLUDE_DIR", erts},
          {"BEAM_ALLOC_DIR", root},
          {"BEAM_ALLOC_INCLUDE_DIR", Path.join(root, "include")},
          {"BEAM_ALLOC_LIB", at.(library)},
          {"BEAM_ALLOC_MK", Path.join(root, "beam_alloc.mk")},
          # (With CC's no-merging flags, as beam_alloc.mk's: without them a
          # report may name another NIF's line.)
          {"BEAM_ALLOC_CFLAGS",
           Enum.join(base_cflags(root, erts) ++ no_code_folding(compiler!(:c), :c), " ")},
          {"BEAM_ALLOC_LDFLAGS", Enum.join(base_ldflags(), " ")}
        ]

    case System.cmd(make, args,
           cd: dir,
           env: env,
           into: IO.stream(:stdio, :line),
           stderr_to_stdout: true
         ) do
      {_, 0} ->
        link_priv(priv?)

      {_, status} ->
        Mix.raise(
          "beam_alloc: \"#{make} #{Enum.join(args, " ")}\" in #{dir} exited with #{status}; " <>
            "see its output above"
        )
    end
  end

  # What elixir_make gives a Makefile besides ERTS_INCLUDE_DIR, so that one
  # written for it runs as it was (a Makefile that stops without
  # ERL_EI_INCLUDE_DIR, or reads MIX_DEPS_PATH, failed here); the VM's
  # BINDIR, ROOTDIR, PROGNAME and EMU are not passed on, as there.
  defp elixir_make_env(at) do
    root = List.to_string(:code.root_dir())
    {ei_include, ei_lib} = {Path.join(root, "usr/include"), Path.join(root, "usr/lib")}

    [
      {"MIX_APP_PATH", at.(Mix.Project.app_path())},
      {"MIX_ENV", to_string(Mix.env())},
      {"MIX_TARGET", to_string(Mix.target())},
      {"MIX_BUILD_PATH", at.(Mix.Project.build_path())},
      {"MIX_COMPILE_PATH", at.(Mix.Project.compile_path())},
      {"MIX_CONSOLIDATION_PATH", at.(Mix.Project.consolidation_path())},
      {"MIX_DEPS_PATH", at.(Mix.Project.deps_path())},
      {"MIX_MANIFEST_PATH", at.(Mix.Project.manifest_path())},
      {"ERL_EI_INCLUDE_DIR", System.get_env("ERL_EI_INCLUDE_DIR", ei_include)},
      {"ERL_EI_LIBDIR", System.get_env("ERL_EI_LIBDIR", ei_lib)},
      {"ERL_INTERFACE_INCLUDE_DIR", System.get_env("ERL_INTERFACE_INCLUDE_DIR", ei_include)},
      {"ERL_INTERFACE_LIB_DIR", System.get_env("ERL_INTERFACE_LIB_DIR", ei_lib)}
    ] ++ Enum.map(~w(BINDIR ROOTDIR PROGNAME EMU), &{&1, nil})
  end

  # A Makefile written for elixir_make may put its .so in the project's
  # priv/ (elixir_make's own examples do). When make made that folder, the
  # app's priv/ becomes a link to it, as elixir_make does: it was left an
  # empty folder of its own, and the NIF was not found on a clean checkout
  # (and, copied there by the next compile, ran one edit behind).
  defp link_priv(true), do: :ok

  defp link_priv(false) do
    app_priv = Path.join(Mix.Project.app_path(), "priv")

    if File.dir?("priv") do
      # (Only when make left it empty: a .so written there stays.)
      _ = File.rmdir(app_priv)
      Mix.Project.build_structure()
    end

    :ok
  end

  # A path as the Makefile gets it: absolute, unless that holds a space or
  # a character make or the recipes' shell takes (a quote, $, #...): then
  # relative to make's directory, when that names the same folder (a ".."
  # after a symbolic link would not). Given as they were, a project under
  # /home/o'brien failed in its recipes' shell, beam_alloc.mk's first.
  defp make_path(path, dir) do
    rel = relative_path(path, dir)
    ups = rel |> Path.split() |> Enum.take_while(&(&1 == ".."))
    lexical = Path.expand(Path.join([dir | ups]))

    if make_plain?(path) or not make_plain?(rel) or
         not same_file?(Path.join([dir | ups]), lexical),
       do: path,
       else: rel
  end

  defp make_plain?(path), do: not String.match?(path, ~r/[^\p{L}\p{N}_\/.+,@~-]/u)

  # path relative to dir (both absolute), with ".." where it is not below.
  defp relative_path(path, dir) do
    {path, dir} = {Path.split(Path.expand(path)), Path.split(Path.expand(dir))}
    common = Enum.zip(path, dir) |> Enum.take_while(fn {a, b} -> a == b end) |> length()
    parts = List.duplicate("..", length(dir) - common) ++ Enum.drop(path, common)
    if parts == [], do: ".", else: Path.join(parts)
  end

  defp same_file?(a, b) do
    with {:ok, %File.Stat{major_device: d, inode: i}} <- File.stat(a),
         {:ok, %File.Stat{major_device: ^d, inode: ^i}} <- File.stat(b),
         do: true,
         else: (_ -> false)
  end

  # --- Building one NIF library ------------------------------------------------------

  defp base_cflags(root, erts) do
    [
      "-g",
      "-fno-omit-frame-pointer",
      "-fno-optimize-sibling-calls",
      "-fPIC",
      "-fvisibility=hidden",
      "-I#{Path.join(root, "include")}",
      "-I#{erts}",
      "-pthread"
    ]
  end

  # GCC at -O2 merges functions whose code is identical (-fipa-icf): two
  # NIFs with the same body then share one address, and a misuse report
  # names the other one's function and line. It also merges identical
  # calls that end two branches (-fcrossjumping, -ftree-tail-merge), and
  # clang does too (tail merging, sinking common code): two beam_free
  # calls of one function share one return address, and a report names
  # the other's line (found by a walkthrough and a review). Off, with the
  # flags of whichever compiler takes them (-Werror makes clang refuse
  # GCC's instead of warning). Asked once per compiler and language.
  defp no_code_folding([exe | args], lang) do
    key = {__MODULE__, :no_ipa_icf, exe, args, lang}

    with nil <- Process.get(key) do
      x = if lang == :cxx, do: "c++", else: "c"

      flags =
        for no_merging <- [
              ["-fno-ipa-icf", "-fno-crossjumping", "-fno-tree-tail-merge"],
              ["-mllvm", "-enable-tail-merge=false", "-mllvm", "-simplifycfg-sink-common=false"]
            ],
            probe = args ++ ["-Werror" | no_merging] ++ ~w(-x #{x} -c /dev/null -o /dev/null),
            match?({_, 0}, System.cmd(exe, probe, stderr_to_stdout: true)),
            flag <- no_merging,
            do: flag

      Process.put(key, flags)
      flags
    end
  end

  defp base_ldflags do
    case :os.type() do
      {:unix, :darwin} -> ["-shared", "-undefined", "dynamic_lookup", "-pthread"]
      _ -> ["-shared", "-Wl,--exclude-libs,ALL", "-pthread"]
    end
  end

  defp build_nif({name, nif}, config, root, erts, library, force) do
    sources = Enum.map(nif.sources, &source!(name, &1))
    langs = Enum.map(sources, &language!(name, &1))
    cxx? = :cxx in langs
    cc = if :c in langs or not cxx?, do: compiler!(:c)
    cxx = if cxx?, do: compiler!(:cxx)

    obj_dir = Path.join(obj_root(), to_string(name))

    compiled =
      for {source, lang} <- Enum.zip(sources, langs) do
        {driver, env_flags} =
          if lang == :cxx,
            do: {cxx, ["-std=gnu++17" | env_flags("CXXFLAGS", ["-O2"])]},
            else: {cc, env_flags("CFLAGS", ["-O2"])}

        lang_flags = if lang == :cxx, do: config.cxxflags ++ nif.cxxflags, else: []

        flags =
          base_cflags(root, erts) ++
            no_code_folding(driver, lang) ++
            env_flags ++ config.cflags ++ nif.cflags ++ lang_flags

        compile_one(name, source, obj_dir, driver, flags, force)
      end

    diagnostics = Enum.flat_map(compiled, fn {_, _, d} -> d end)

    if Enum.any?(compiled, fn {status, _, _} -> status == :error end) do
      {:error, diagnostics}
    else
      objects = Enum.map(compiled, fn {_, obj, _} -> obj end)
      rebuilt? = Enum.any?(compiled, fn {status, _, _} -> status == :ok end)
      linker = if cxx?, do: cxx, else: cc

      link_args =
        objects ++
          [library] ++
          base_ldflags() ++
          env_flags("LDFLAGS", []) ++
          config.ldflags ++ nif.ldflags ++ Enum.map(config.libs ++ nif.libs, &lib_flag/1)

      case link(name, linker, link_args, objects ++ [library], rebuilt? or force) do
        {:error, d} -> {:error, diagnostics ++ d}
        status -> {status, diagnostics}
      end
    end
  end

  defp source!(name, source) do
    path = Path.expand(source)

    unless File.regular?(path) do
      Mix.raise(
        "beam_alloc: source file #{source} of NIF #{name} does not exist " <>
          "(looked for #{path}; paths are relative to the project directory)"
      )
    end

    path
  end

  defp language!(name, path) do
    ext = Path.extname(path)

    cond do
      ext in @c_exts ->
        :c

      ext in @cxx_exts ->
        :cxx

      true ->
        Mix.raise(
          "beam_alloc: cannot compile #{Path.relative_to_cwd(path)} of NIF #{name}: " <>
            "expected a C (.c) or C++ (#{Enum.join(@cxx_exts, ", ")}) source"
        )
    end
  end

  # [program | args] of CC or CXX, checked to exist.
  defp compiler!(lang) do
    {var, default, package} =
      if lang == :cxx, do: {"CXX", "c++", "g++"}, else: {"CC", "cc", "gcc"}

    command =
      case System.get_env(var) do
        value when value in [nil, ""] -> default
        value -> value
      end

    [program | args] = OptionParser.split(command)

    case System.find_executable(program) do
      nil ->
        Mix.raise("""
        beam_alloc: the #{if lang == :cxx, do: "C++", else: "C"} compiler #{inspect(program)} \
        was not found in PATH.

        Install one (on Debian: apt-get install #{package}) or set #{var} to the compiler to use.
        """)

      exe ->
        [exe | args]
    end
  end

  defp env_flags(var, default) do
    case System.get_env(var) do
      nil -> default
      value -> OptionParser.split(value)
    end
  end

  defp lib_flag("-" <> _ = flag), do: flag

  defp lib_flag(lib) do
    if String.ends_with?(lib, [".a", ".so"]) or String.contains?(lib, ".so."),
      do: lib,
      else: "-l" <> lib
  end

  # {status, object, diagnostics}: :noop when the object is up to date.
  defp compile_one(name, source, obj_dir, [exe | pre], flags, force) do
    rel = Path.relative_to(source, File.cwd!())
    rel = if Path.type(rel) == :absolute, do: String.trim_leading(rel, "/"), else: rel
    obj = Path.join(obj_dir, rel <> ".o")
    dep = obj <> ".d"
    cmd_file = obj <> ".cmd"
    args = pre ++ flags ++ ["-MMD", "-MF", dep, "-c", source, "-o", obj]
    command = Enum.join([exe | args], "\0")

    if not force and up_to_date?(obj, dep, cmd_file, command) do
      {:noop, obj, []}
    else
      File.mkdir_p!(Path.dirname(obj))
      Mix.shell().info("beam_alloc: compiling #{rel} (#{name})")
      before = sum_of([source])
      {out, status} = System.cmd(exe, args, stderr_to_stdout: true)
      if out != "", do: IO.write(out)
      diagnostics = diagnostics(out)

      if status == 0 do
        File.write!(cmd_file, command)
        # A source edited while it compiled: the object is of the old one,
        # so no sum, and the next compile builds it again.
        if sum_of([source]) == before,
          do: record_sum(obj <> ".sum", read_deps(dep)),
          else: File.rm(obj <> ".sum")

        {:ok, obj, diagnostics}
      else
        File.rm(obj)
        File.rm(cmd_file)

        diagnostics =
          if Enum.any?(diagnostics, &(&1.severity == :error)),
            do: diagnostics,
            else:
              diagnostics ++
                [diagnostic(source, 0, :error, "compilation failed (exit status #{status})")]

        Mix.shell().error(
          "beam_alloc: could not compile #{rel} of NIF #{name}; see the errors above"
        )

        {:error, obj, diagnostics}
      end
    end
  end

  # Up to date when built by the same command from the same contents. By
  # content, not by modification time: the times File.stat gives are whole
  # seconds, so an edit within the second of the build looked older than
  # the object, and the old library stayed (a checkout can also date a
  # changed file back).
  defp up_to_date?(obj, dep, cmd_file, command) do
    with true <- File.exists?(obj),
         {:ok, ^command} <- File.read(cmd_file),
         {:ok, deps} <- read_deps(dep),
         {:ok, sum} <- sum_of(deps) do
      File.read(obj <> ".sum") == {:ok, sum}
    else
      _ -> false
    end
  end

  # The MD5 of the files' names and contents (a few headers and a source;
  # beam_alloc's library, about 1 MB, for a link: milliseconds), or :error
  # when one cannot be read.
  defp sum_of(files) do
    Enum.reduce_while(files, [], fn file, acc ->
      case File.read(file) do
        {:ok, data} -> {:cont, [acc, file, 0, :erlang.md5(data)]}
        _ -> {:halt, :error}
      end
    end)
    |> case do
      :error -> :error
      parts -> {:ok, Base.encode16(:erlang.md5(parts))}
    end
  end

  # Written after a build; without a sum (unreadable inputs), the next
  # compile builds again.
  defp record_sum(sum_file, {:ok, files}) do
    case sum_of(files) do
      {:ok, sum} -> File.write!(sum_file, sum)
      :error -> File.rm(sum_file)
    end
  end

  defp record_sum(sum_file, :error), do: File.rm(sum_file)

  # The prerequisites of a make rule written by -MMD ("obj: a.c b.h \\").
  defp read_deps(dep) do
    with {:ok, text} <- File.read(dep),
         [_target, prereqs | _] <- String.split(text, ": ", parts: 2) do
      files =
        prereqs
        |> String.replace("\\\n", " ")
        |> String.replace("\\ ", "\0")
        |> String.split()
        |> Enum.map(&unescape_make/1)

      {:ok, files}
    else
      _ -> :error
    end
  end

  # A file name as make's syntax writes it: a space as "\ " (kept whole above),
  # # as "\#", $ as "$$". (Left so, a file under "c#dir" or "a$b" was never
  # found, and every compile of such a project built everything again.)
  defp unescape_make(file) do
    file
    |> String.replace("\0", " ")
    |> String.replace("\\#", "#")
    |> String.replace("$$", "$")
  end

  defp link(name, [exe | pre], args, inputs, rebuilt?) do
    so = so_path(name)
    cmd_file = Path.join(obj_root(), "#{name}.so.cmd")
    args = pre ++ args ++ ["-o", so]
    command = Enum.join([exe | args], "\0")

    sum_file = Path.join(obj_root(), "#{name}.so.sum")

    fresh? =
      not rebuilt? and File.exists?(so) and
        match?({:ok, ^command}, File.read(cmd_file)) and
        case sum_of(inputs) do
          {:ok, sum} -> File.read(sum_file) == {:ok, sum}
          :error -> false
        end

    if fresh? do
      :noop
    else
      File.mkdir_p!(Path.dirname(so))
      File.mkdir_p!(obj_root())
      Mix.shell().info("beam_alloc: linking priv/#{name}.so")
      {out, status} = System.cmd(exe, args, stderr_to_stdout: true)
      if out != "", do: IO.write(out)

      if status == 0 do
        File.write!(cmd_file, command)
        record_sum(sum_file, {:ok, inputs})
        :ok
      else
        File.rm(cmd_file)
        Mix.shell().error("beam_alloc: could not link priv/#{name}.so; see the errors above")

        {:error,
         [diagnostic(so, 0, :error, "link failed (exit status #{status}): #{String.trim(out)}")]}
      end
    end
  end

  # gcc and clang write "file:line:col: error: message".
  @diagnostic ~r/^(?<file>[^:\n]+):(?<line>\d+):(?:(?<col>\d+):)? (?<sev>fatal error|error|warning): (?<msg>.*)$/m

  defp diagnostics(out) do
    for %{"file" => file, "line" => line, "sev" => sev, "msg" => msg} <-
          Regex.scan(@diagnostic, out, capture: :all_names) |> Enum.map(&to_map/1) do
      severity = if sev == "warning", do: :warning, else: :error
      diagnostic(Path.expand(file), String.to_integer(line), severity, msg)
    end
  end

  defp to_map([col, file, line, msg, sev]),
    do: %{"col" => col, "file" => file, "line" => line, "msg" => msg, "sev" => sev}

  defp diagnostic(file, line, severity, message) do
    %Mix.Task.Compiler.Diagnostic{
      compiler_name: "beam_alloc",
      file: file,
      position: line,
      message: message,
      severity: severity
    }
  end
end
