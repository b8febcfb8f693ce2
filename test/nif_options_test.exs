defmodule BeamAlloc.NifOptionsTest do
  # Per-NIF options from Elixir and Erlang: `use BeamAlloc.Nif, nifs: [...]`
  # and erlang:load_nif/2 with a map, which BEAM_NIF_INIT reads and
  # beam_nif_call applies over the C options (test/nifs/options_impl.h).
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Options

  # What follows a key that names only raw NIFs.
  @raw_nif " names only plain functions of the NIF table, which options do not reach: " <>
             "define it with BEAM_NIF"

  # The hint after "X names no function of the NIF table".
  @fun_options " (load_info maps each function's name to its options: " <>
                 "\#{Fun => \#{leak_check => true}}; beside settings of your own, " <>
                 "under beam_alloc: \#{beam_alloc => \#{Fun => ...}})"

  # Options.fun() leaks under leak_check: RuntimeError names the function.
  defp assert_leak_raised(fun) do
    message = "memory leak detected in function `BeamAlloc.Test.Options.#{fun}/0`"
    assert_raise RuntimeError, message, fn -> apply(Options, fun, []) end
  end

  describe "use BeamAlloc.Nif" do
    # Each NIF answers with the kind of its beam_allocator.
    for {what, fun, kind} <- [
          {"sets the allocator of a NIF that has none in C", :kind, :gpa},
          {"replaces the allocator a NIF chose in C", :kind_large, :raw},
          {"turns leak_check off, with another allocator", :kind_checked, :large},
          {"turns scratch off", :kind_scratch, :raw}
        ] do
      test what do
        assert apply(Options, unquote(fun), []) == unquote(kind)
      end
    end

    test "turns leak_check on" do
      assert_leak_raised(:leaky)
    end

    test "leaves a dirty twin (one C function, another name) its own options" do
      assert Options.leaky_dirty() == :ok
    end

    test "applies a name to every arity, and {name, arity} over it" do
      assert Options.two() == :large
      assert Options.two(:x) == {:arena, :gpa}
    end

    test "leaves the NIFs it does not name alone" do
      assert_leak_raised(:leaky_checked)
    end

    test "passes the options to the library as a map" do
      assert %{
               {:two, 1} => %{allocator: :gpa, scratch: true},
               kind: %{allocator: :gpa},
               leaky: %{leak_check: true}
             } = Options.beam_alloc_nif_options()
    end

    test "adds no double-underscore name to the module" do
      # Only Elixir's own __info__/1: what it generates is beam_alloc_*.
      names = for {name, _} <- Options.__info__(:functions), do: Atom.to_string(name)
      assert "beam_alloc_load_nif" in names
      assert Enum.filter(names, &String.contains?(&1, "__")) == []
    end
  end

  describe "use BeamAlloc.Nif options" do
    test "need a library" do
      assert_raise ArgumentError, ~r/expects :library/, fn -> compile(otp_app: :beam_alloc) end
    end

    test "reject unknown use options" do
      assert_raise ArgumentError, ~r/unknown keys \[:nif\]/, fn ->
        compile(library: "x", nif: [])
      end
    end

    test "reject unknown NIF options, naming the NIF" do
      message = ~r/unknown option :leakcheck for NIF check_me, the known options are/

      assert_raise ArgumentError, message, fn ->
        compile(library: "x", nifs: [check_me: [leakcheck: true]])
      end
    end

    test "reject bad values" do
      assert_raise ArgumentError,
                   ~r/:allocator of NIF basic, expected :raw, :large or :gpa/,
                   fn ->
                     compile(library: "x", nifs: [basic: [allocator: :fast]])
                   end

      assert_raise ArgumentError, ~r/:scratch of NIF parse\/1, expected a boolean/, fn ->
        compile(library: "x", nifs: [{{:parse, 1}, scratch: :yes}])
      end

      assert_raise ArgumentError, ~r/invalid NIF in :nifs option/, fn ->
        compile(library: "x", nifs: [{"parse", leak_check: true}])
      end

      assert_raise ArgumentError, ~r/invalid value for :nifs option/, fn ->
        compile(library: "x", nifs: :all)
      end

      # An improper list raised Enum's FunctionClauseError instead. (Quoted:
      # an improper list is no literal of the AST compile/1 builds.)
      assert_raise ArgumentError,
                   ~r/invalid value for :nifs option, .*got: \[{:parse, \[\]} \| :b\]$/,
                   fn -> compile(quote(do: [library: "x", nifs: [{:parse, []} | :b]])) end
    end

    test "an unknown otp_app: the load error names the option" do
      assert {:error, {:no_priv_dir, :no_such_app_here, text}} =
               BeamAlloc.Nif.library_path(:no_such_app_here, "my_nif")

      assert List.to_string(text) =~
               "no application :no_such_app_here is on the code path, so no priv/ " <>
                 "to load my_nif.so from: otp_app: names the application"
    end

    test "a library that was not built: the load error says where to look" do
      path = ~c"/nonexistent/no_such_nif"
      result = :erlang.load_nif(path, [])

      assert {:error, {:load_failed, text}} =
               BeamAlloc.Nif.explain_load(result, path, "no_such_nif")

      text = List.to_string(text)
      assert text =~ "no /nonexistent/no_such_nif.so: is :beam_alloc in the compilers:"
      assert text =~ "nifs: [{:no_such_nif, [...sources]}]"

      # A library that is there but cannot load (here: not a library at
      # all) gets no such hint.
      dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_not_a_nif")
      File.mkdir_p!(dir)
      file = Path.join(dir, "not_a_nif")
      File.write!(file <> ".so", "not an ELF file")
      result = :erlang.load_nif(String.to_charlist(file), [])
      assert {:error, {:load_failed, text}} = BeamAlloc.Nif.explain_load(result, file, "x")
      refute List.to_string(text) =~ "compilers:"
    end

    test "a library that calls what nothing linked defines: the load error says which link to mend" do
      dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_undef")

      File.mkdir_p!(dir)
      src = Path.join(dir, "undef_nif.c")
      # A C library's function the link did not name (libs: left out).
      File.write!(src, """
      extern int beam_alloc_test_nowhere(int);
      int calls_it(int x) { return beam_alloc_test_nowhere(x); }
      """)

      cc = System.get_env("CC") || "cc"
      so = Path.join(dir, "undef_nif")
      {_, 0} = System.cmd(cc, ["-shared", "-fPIC", "-o", so <> ".so", src])
      result = :erlang.load_nif(String.to_charlist(so), [])

      assert {:error, {:load_failed, text}} = :beam_alloc.explain_load_error(result)
      text = List.to_string(text)
      assert text =~ "undefined symbol: beam_alloc_test_nowhere"

      assert text =~
               "(beam_alloc: nothing the NIF library was linked with defines " <>
                 "beam_alloc_test_nowhere: link the C library that does, " <>
                 "libs: [\"name\"] in the Mix options"

      # The Mix path (use BeamAlloc.Nif) gives the same hint, and not the
      # one for a library that was not built.
      assert {:error, {:load_failed, mix_text}} =
               BeamAlloc.Nif.explain_load(result, so, "undef_nif")

      assert List.to_string(mix_text) == text

      # Explained once: a second call leaves the text as it is.
      assert :beam_alloc.explain_load_error(
               {:error, {:load_failed, text |> String.to_charlist()}}
             ) ==
               {:error, {:load_failed, String.to_charlist(text)}}

      # A VM function the VM lacks, and a symbol of a library version
      # newer than this machine's, get their own hints.
      assert {:error, {:load_failed, enif}} =
               :beam_alloc.explain_load_error(
                 {:error, {:load_failed, ~c"x.so: undefined symbol: enif_new_thing"}}
               )

      assert List.to_string(enif) =~
               "(beam_alloc: this VM has no enif_new_thing: the NIF library was built against " <>
                 "the erl_nif.h of a newer Erlang/OTP; build it for this one)"

      assert {:error, {:load_failed, versioned}} =
               :beam_alloc.explain_load_error(
                 {:error, {:load_failed, ~c"x.so: undefined symbol: deflate2, version ZLIB_9"}}
               )

      assert List.to_string(versioned) =~
               "(beam_alloc: the library that defines deflate2 here is older than the one"

      # Other load failures, and texts that are not character lists, pass
      # through unchanged.
      for other <- [
            {:error, {:load_failed, ~c"Failed to load NIF library: 'x.so: bad ELF'"}},
            {:error, {:load_failed, "undefined symbol: x"}},
            {:error, {:load_failed, [1000, 1001]}}
          ] do
        assert :beam_alloc.explain_load_error(other) == other
      end
    end

    test "a sanitizer's symbol: the load error says to link with the sanitizer too" do
      # CFLAGS with -fsanitize=... and no LDFLAGS: the objects call the
      # sanitizer's runtime, which the link did not name.
      for sym <- ["__ubsan_vptr_type_cache", "__asan_report_store1", "__tsan_read8"] do
        assert {:error, {:load_failed, text}} =
                 :beam_alloc.explain_load_error(
                   {:error,
                    {:load_failed, ~c"x.so: undefined symbol: " ++ String.to_charlist(sym)}}
                 )

        text = List.to_string(text)
        assert text =~ "(beam_alloc: #{sym} is a sanitizer's: the NIF library was compiled"
        refute text =~ "link the C library that does"
      end
    end

    test "accept a private stub under nifs: (a public wrapper calls it)" do
      compile_module(
        quote do
          use BeamAlloc.Nif, library: "x", nifs: [parse: [leak_check: true]]
          def run(x), do: parse(x)
          defp parse(_), do: :erlang.nif_error(:not_loaded)
        end
      )
    end

    test "read module attributes set above the use (a macro saw only their names)" do
      compile_module(
        quote do
          @library "x"
          @parse_options [leak_check: true, allocator: :gpa]
          use BeamAlloc.Nif, library: @library, nifs: [parse: @parse_options]
          def parse(_), do: :erlang.nif_error(:not_loaded)
          # What beam_alloc_nif_options/0 returns (the module cannot be
          # called: its on_load fails without library "x").
          send(unquote(self()), {:nif_options, @beam_alloc_nif_options})
        end
      )

      assert_received {:nif_options, %{parse: %{leak_check: true, allocator: :gpa}}}

      # A bad value from an attribute is named as such (it read as nil:
      # "expected a keyword list, got: nil").
      assert_raise ArgumentError,
                   ~r/:allocator of NIF parse, expected :raw, :large or :gpa/,
                   fn ->
                     compile_module(
                       quote do
                         @parse_options [allocator: :fast]
                         use BeamAlloc.Nif, library: "x", nifs: [parse: @parse_options]
                         def parse(_), do: :erlang.nif_error(:not_loaded)
                       end
                     )
                   end
    end

    test "reject a NIF or an option given twice, and a library with its extension" do
      # (Each used to be silently the last one; "x.so" looked for x.so.so.)
      assert_raise ArgumentError, ~r/the :nifs option: parse is given more than once/, fn ->
        compile(library: "x", nifs: [parse: [leak_check: true], parse: [scratch: true]])
      end

      assert_raise ArgumentError,
                   ~r/the options of NIF parse: leak_check is given more than once/,
                   fn ->
                     compile(library: "x", nifs: [parse: [leak_check: true, leak_check: false]])
                   end

      assert_raise ArgumentError,
                   ~r/expected the path without extension: library: "x", got: "x.so"/,
                   fn -> compile(library: "x.so") end
    end

    test "reject NIF names the module does not define, at compile time" do
      assert_raise ArgumentError, ~r/:nifs names nope, parse\/2, which the module does not/, fn ->
        compile(library: "x", nifs: [{:nope, [leak_check: true]}, {{:parse, 2}, []}])
      end
    end

    test "take the application from the Mix project by default" do
      assert BeamAlloc.Test.OptionsDefaultApp.kind() == :large
    end
  end

  describe "erlang:load_nif/2 with a map" do
    test "sets the options of the NIFs it names" do
      assert :beam_alloc_options_erl.kind() == :large
      # scratch added to a leak-checked NIF: an arena over the checking instance
      assert :beam_alloc_options_erl.kind_checked() == {:arena, :leak_check}
      assert :beam_alloc_options_erl.leaky_checked() == :ok
    end

    test "with {name, arity} sets that arity only" do
      assert :beam_alloc_options_erl.two() == :leak_check
      assert :beam_alloc_options_erl.two(:x) == :raw
    end

    test "leaves the others with their C options" do
      assert :beam_alloc_options_erl.kind_large() == :large
      assert :beam_alloc_options_erl.kind_scratch() == {:arena, :raw}
    end
  end

  describe "load_info that beam_alloc refuses" do
    # BeamAlloc.Test.LoadInfo is created afresh for every load: a module
    # loads its NIF library once.
    @module BeamAlloc.Test.LoadInfo

    test "fails the load" do
      for info <- [
            %{kind: %{leak: true}},
            %{kind: %{allocator: :fast}},
            %{kind: :nope},
            %{"kind" => []},
            %{no_such_nif: []},
            %{{:kind, 2} => [scratch: true]}
          ] do
        assert {:error, {:load, ~c"Library load-call unsuccessful" ++ _}} = load_fresh(info),
               inspect(info)
      end
    end

    test "is explained by beam_alloc:explain_load_error/1 (what use BeamAlloc.Nif returns)" do
      for {info, why} <- [
            {%{kind: %{leak: true}}, "load_info names an unknown option"},
            {%{kind: %{allocator: :fast}}, "a load_info option has a value it cannot take"},
            {%{kind: :nope},
             "a load_info value is neither a map nor a property list (under beam_alloc: not a map)"},
            {%{"kind" => []}, "a load_info key is neither a function name nor {Name, Arity}"},
            {%{no_such_nif: []}, "a load_info key names no function of the NIF table"},
            {%{kind: [scratch: true, scratch: true]},
             "a load_info property list gives an option twice"},
            {%{take_reports: [scratch: true]},
             "a load_info key names only plain functions of the NIF table (not BEAM_NIF), " <>
               "which options do not reach"}
          ] do
        assert {:error, {:load, message}} = :beam_alloc.explain_load_error(load_fresh(info))

        assert message ==
                 "beam_alloc: #{why} (the details went to the logger, or to standard " <>
                   "error where the beam_alloc application is not started)",
               inspect(info)
      end

      assert :beam_alloc.explain_load_error(:ok) == :ok
      other = {:error, {:load, ~c"Library load-call unsuccessful (1)."}}
      assert :beam_alloc.explain_load_error(other) == other

      # Reasons that are not text pass through too (re:run raised on them).
      for text <- [:x, 42, [256, 1000], {:load, :x}] do
        assert :beam_alloc.explain_load_error({:error, {:load, text}}) == {:error, {:load, text}}
      end
    end

    test "a list naming a NIF is left to the library's load, with a warning that says so" do
      list = [{:leaky, [leak_check: true]}, :other, {"x", 1}]
      assert :ok = load_fresh(list)
      # (Not applied: the leak is not raised.)
      assert apply(@module, :leaky, []) == :ok

      assert {0, [report]} = apply(@module, :parse_load_info, [list])

      assert report ==
               "beam_alloc: the NIF library of BeamAlloc.Test.LoadInfo got a list " <>
                 "as load_info, which is left to its own load: the options it gives leaky " <>
                 "are not applied (beam_alloc's need a map, \#{leaky => \#{...}})"

      # {Name, Arity} keys too; a list of the library's own settings, even
      # one named like a NIF, is quiet.
      assert {0, [_]} = apply(@module, :parse_load_info, [[{{:leaky, 0}, %{leak_check: true}}]])
      assert {0, []} = apply(@module, :parse_load_info, [[pool_size: 4, leaky: true]])
    end

    test "is explained at an upgrade too (a new version of a module whose old one has the library)" do
      assert :ok = load_fresh(%{})

      ExUnit.CaptureIO.capture_io(:stderr, fn ->
        assert {:error, {:upgrade, message}} =
                 :beam_alloc.explain_load_error(load_version(%{kind: %{leak: true}}))

        assert message ==
                 "beam_alloc: load_info names an unknown option (the details went to the " <>
                   "logger, or to standard error where the beam_alloc application is not started)"
      end)
    end

    test "refuses different options for twins on one scheduler, which a call cannot tell apart" do
      info = %{checked_twin: [leak_check: false]}
      assert {:error, {:load, message}} = :beam_alloc.explain_load_error(load_fresh(info))

      assert message =~
               "load_info gives two names of one C function options a call cannot keep apart"

      assert {0xBA7, [report]} = Options.parse_load_info(info)

      assert report =~
               "load_info: checked_twin/0 and checked_twin_too/0 are one C function " <>
                 "and get different entries (on the same kind of scheduler a call " <>
                 "cannot tell them apart"

      assert :ok =
               load_fresh(%{
                 checked_twin: [leak_check: false],
                 checked_twin_too: [leak_check: false]
               })

      assert apply(@module, :checked_twin, []) == :ok
      assert apply(@module, :checked_twin_too, []) == :ok
    end

    test "refuses different allocators for twins on two kinds of scheduler" do
      # A body moving itself to a dirty scheduler would free with the other allocator.
      info = %{leaky_dirty: [allocator: :gpa]}
      assert {0xBA7, [report]} = Options.parse_load_info(info)

      assert report =~
               "leaky/0 and leaky_dirty/0 are one C function and get different allocators"

      assert {:error, {:load, _}} = load_fresh(info)
      assert :ok = load_fresh(%{leaky: [allocator: :gpa], leaky_dirty: [allocator: :gpa]})
    end

    test "gives a dirty twin its own options, and its own name in messages" do
      assert :ok = load_fresh(%{leaky_dirty: [leak_check: true]})
      assert apply(@module, :leaky, []) == :ok
      message = "memory leak detected in function `#{inspect(@module)}.leaky_dirty/0`"
      assert_raise RuntimeError, message, fn -> apply(@module, :leaky_dirty, []) end
    end

    test "gives alike twins their options on both kinds of scheduler" do
      # (Their calls skip the scheduler's pick: any entry is the answer.)
      assert :ok = load_fresh(%{leaky: [leak_check: true], leaky_dirty: [leak_check: true]})

      for fun <- [:leaky, :leaky_dirty] do
        message = "memory leak detected in function `#{inspect(@module)}.#{fun}/0`"
        assert_raise RuntimeError, message, fn -> apply(@module, fun, []) end
      end
    end

    test "takes a bare atom of a property list as {Atom, true}, as proplists do" do
      assert :ok = load_fresh(%{kind: [:scratch]})
      assert apply(@module, :kind, []) == {:arena, :raw}
    end

    test "is ignored when it is not a map" do
      assert :ok = load_fresh(:not_a_map)
      assert apply(@module, :kind, []) == :raw
      assert apply(@module, :kind_scratch, []) == {:arena, :raw}
    end

    test "can be any valid map" do
      assert :ok = load_fresh(%{kind: [allocator: :large], kind_scratch: []})
      assert apply(@module, :kind, []) == :large
      assert apply(@module, :kind_scratch, []) == {:arena, :raw}
    end

    test "sits under beam_alloc beside the NIF's own settings" do
      # A NIF whose load reads a map of its own could take no options: every
      # key had to name a function.
      assert :ok = load_fresh(%{beam_alloc: %{kind: [allocator: :large]}, pool_size: 4})
      assert apply(@module, :kind, []) == :large
      assert apply(@module, :kind_scratch, []) == {:arena, :raw}

      assert :ok = load_fresh(%{beam_alloc: %{}, pool_size: 4})
      assert apply(@module, :kind, []) == :raw

      assert {0xBA3, [report]} = Options.parse_load_info(%{beam_alloc: [kind: []]})

      assert report =~
               "load_info: the options under beam_alloc must be a map of each function's " <>
                 "options, got [{kind,[]}]"

      assert {0xBA2, [report]} = Options.parse_load_info(%{beam_alloc: %{pool_size: 4}})
      assert report =~ "load_info: pool_size names no function of the NIF table"
    end

    test "leaves a plain setting of the NIF's own beside the options (ported from ERL_NIF_INIT)" do
      # A NIF that loaded with #{version => 1} under ERL_NIF_INIT failed to
      # load once renamed BEAM_NIF_INIT (found porting an existing NIF): a
      # key naming no function whose value is no map or list cannot be
      # options, and goes to the load alone.
      assert :ok = load_fresh(%{version: 1, pool_size: 4, name: "squeeze"})
      assert apply(@module, :kind, []) == :raw

      assert :ok = load_fresh(%{version: 1, kind: [allocator: :large]})
      assert apply(@module, :kind, []) == :large

      # Still refused: an option at the top level, a map or list value (an
      # options entry with a typo), and anything under beam_alloc.
      for info <- [
            %{leak_check: true},
            %{raise_on_misuse: false},
            %{nope: []},
            %{nope: %{leak_check: true}},
            %{beam_alloc: %{version: 1}}
          ] do
        assert {code, [report]} = Options.parse_load_info(info)
        assert code != 0, inspect(info)
        assert report =~ "names no function of the NIF table", report
      end
    end

    test "is reported with the reason" do
      assert {_, [report]} = Options.parse_load_info(%{kind: %{leak: true}})

      assert report ==
               "beam_alloc: cannot load the NIF library of BeamAlloc.Test.Options: " <>
                 "load_info: unknown option leak for kind (known: allocator, leak_check, " <>
                 "raise_on_misuse, scratch)"

      for {info, reason} <- [
            {%{kind: [allocator: :fast]},
             "allocator for kind must be raw, large or gpa, got fast"},
            {%{kind: [scratch: 1]}, "scratch for kind must be true or false, got 1"},
            {%{kind: [leak_check: nil]}, "leak_check for kind must be true or false, got nil"},
            {%{kind: :nope}, "the options of kind must be a map or a property list, got nope"},
            {%{kind: [5]}, "the options of kind must be {Name, Value} pairs or atoms, got 5"},
            # A bare atom is {Atom, true}: an option that takes no boolean says so.
            {%{kind: [:allocator]}, "allocator for kind must be raw, large or gpa, got true"},
            {%{"kind" => []}, ~s(keys must be a NIF name or {Name, Arity}, got <<"kind">>)},
            {%{nope: []}, "nope names no function of the NIF table" <> @fun_options},
            {%{{:kind, 3} => []}, "{kind,3} names no function of the NIF table" <> @fun_options},
            # Options given at the top level: the key is what is wrong.
            {%{leak_check: true},
             "leak_check names no function of the NIF table" <> @fun_options},
            # A plain function of the table (a raw NIF): no option reaches
            # it (they were taken and did nothing; found in review).
            {%{take_reports: [leak_check: true]}, "take_reports" <> @raw_nif},
            {%{{:parse_load_info, 1} => %{scratch: true}}, "{parse_load_info,1}" <> @raw_nif},
            # Twice in a property list: which one counts was the last, silently.
            {%{kind: [leak_check: true, leak_check: false]},
             "leak_check is given twice for kind"},
            {%{kind: [allocator: :raw, scratch: true, allocator: :gpa]},
             "allocator is given twice for kind"}
          ] do
        assert {code, [report]} = Options.parse_load_info(info)
        assert code != 0
        assert String.ends_with?(report, "load_info: " <> reason), report
      end

      # and the options in force are untouched
      assert Options.kind() == :gpa
    end

    defp load_fresh(info) do
      :code.purge(@module)
      :code.delete(@module)
      :code.purge(@module)
      load_version(info)
    end

    # A new version of the module, over the current one (which keeps its
    # library: load_nif upgrades it).
    defp load_version(info) do
      path = :filename.join(:code.priv_dir(:beam_alloc), ~c"load_info_nif")

      stubs =
        for {name, arity} <- [
              kind: 0,
              kind_large: 0,
              kind_checked: 0,
              kind_scratch: 0,
              two: 0,
              two: 1,
              leaky: 0,
              leaky_checked: 0,
              leaky_dirty: 0,
              checked_twin: 0,
              checked_twin_too: 0,
              parse_load_info: 1,
              take_reports: 0
            ] do
          args = Macro.generate_arguments(arity, __MODULE__)

          quote do
            def unquote(name)(unquote_splicing(args)), do: :erlang.nif_error(:not_loaded)
          end
        end

      contents =
        quote do
          def load(info), do: :erlang.load_nif(unquote(path), info)
          unquote_splicing(stubs)
        end

      Module.create(@module, contents, Macro.Env.location(__ENV__))
      apply(@module, :load, [info])
    end
  end

  # Compiles a module of body (its on_load then finds no library "x",
  # which is only logged); returns its name.
  defp compile_module(body) do
    module = Module.concat(__MODULE__, "Compiled#{System.unique_integer([:positive])}")

    ExUnit.CaptureLog.capture_log(fn ->
      assert [{^module, _}] =
               Code.compile_quoted(
                 quote do
                   defmodule unquote(module), do: unquote(body)
                 end
               )
    end)

    module
  end

  # Compiles a module that uses BeamAlloc.Nif with opts; returns its name.
  defp compile(opts) do
    module = Module.concat(__MODULE__, "Compiled#{System.unique_integer([:positive])}")

    Code.compile_quoted(
      quote do
        defmodule unquote(module) do
          use BeamAlloc.Nif, unquote(opts)
        end
      end
    )

    module
  end
end
