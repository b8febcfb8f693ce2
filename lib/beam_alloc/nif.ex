defmodule BeamAlloc.Nif do
  @moduledoc ~S"""
  Loads a NIF library built with beam_alloc into the module that uses it,
  and sets allocator options per NIF from Elixir.

      defmodule MyNif do
        use BeamAlloc.Nif,
          otp_app: :my_app,
          library: "my_nif",
          nifs: [
            check_me: [leak_check: true],
            basic: [allocator: :gpa],
            parse: [scratch: true]
          ]

        def check_me, do: :erlang.nif_error(:not_loaded)
        def basic, do: :erlang.nif_error(:not_loaded)
        def parse(_json), do: :erlang.nif_error(:not_loaded)
      end

  The options given under `:nifs` override, for the functions they name,
  what the C code chose with `BEAM_NIF(name, .leak_check = ..., ...)`: a
  NIF written `BEAM_NIF(check_me)` runs leak-checked here without a
  rebuild. The library must be built with `BEAM_NIF_INIT`, which reads
  them from the `load_info` that `:erlang.load_nif/2` passes: a map of
  NIF names (or `{name, arity}` tuples) to option maps. An Erlang module
  gets the same by loading its library with that map:

      erlang:load_nif(Path, #{check_me => #{leak_check => true}}).

  `use BeamAlloc.Nif` defines an `@on_load` function that loads
  `priv/<library>.so` of the `:otp_app` application with that map, so the
  NIF stubs of the module are replaced as soon as it is loaded. Write the
  stubs as usual (`:erlang.nif_error(:not_loaded)`). A library that cannot
  be loaded leaves the module unloaded, and the VM logs why.

  ## Options

    * `:library` (required) - the NIF library's path inside the
      application's `priv` directory, without the extension: `"my_nif"` for
      `priv/my_nif.so`, `"nifs/my_nif"` for `priv/nifs/my_nif.so` (an
      absolute path, or one with `..`, raises `ArgumentError`).
    * `:otp_app` - the application whose `priv` directory holds the library;
      defaults to the application of the Mix project being compiled.
    * `:nifs` - per-NIF options: a keyword list of NIF names and their
      options. A name applies to every arity of that name; to set one arity
      only, give the key as `{name, arity}` (`[{{:parse, 2}, scratch: true}]`).
      NIFs not listed keep the options of their C code.
    * `:load_info` - the library's own settings, a map its load callback
      (`BEAM_NIF_INIT`'s LOAD) gets as `load_info`, with the per-NIF
      options under the key `beam_alloc` (`load_info: %{pool_size: 4}`
      loads with `%{pool_size: 4, beam_alloc: %{...}}`). Without it the
      load callback gets the per-NIF options' map alone.

  ## Per-NIF options

    * `:leak_check` - `true` runs each call on a fresh general purpose
      allocator and raises `RuntimeError` ("memory leak detected in function
      `MyNif.check_me/0`") when a block outlives the call, or ("memory
      misuse detected in function `MyNif.check_me/0`: double free") when
      the call misuses memory; `false` turns a C `.leak_check = true` off.
    * `:raise_on_misuse` - `true` makes a call that misuses memory (a
      double free, a write past the end of a block or after free, a free
      with a wrong length or alignment, a free of a pointer the allocator
      does not own) raise `RuntimeError` ("memory misuse detected in
      function `MyNif.parse/1`: double free") once it is over, as
      `:leak_check` calls always do; without it the misuse is reported and
      the call returns as usual.
    * `:scratch` - `true` makes `beam_allocator` an arena, given back in one
      step when the call returns (no frees needed, none of its memory may
      outlive the call); `false` turns a C `.scratch = true` off.
    * `:allocator` - the allocator behind `beam_allocator` (and under
      `:leak_check` and `:scratch`): `:raw` (`enif_alloc`, alignment up to
      8), `:large` (any alignment, over `:raw`) or `:gpa` (the process-wide
      general purpose allocator). Replaces a C `.allocator` function.

  Options are checked when the module is compiled: an unknown name or value
  raises `ArgumentError` there. The C side checks again at load, for
  modules that pass the map themselves, and for names that are plain
  functions of the NIF table (not `BEAM_NIF`: no option reaches them): a
  bad map fails the load, and the
  reason goes to the logger (to standard error where the beam_alloc
  application is not started).
  """

  @allocators [:raw, :large, :gpa]

  @doc false
  defmacro __using__(opts) do
    # The options are read in the module's body, where module attributes
    # set above the `use` have their values (a macro sees only their names:
    # `nifs: [parse: @opts]` read as nil), and checked there.
    #
    # What this puts into the user's module is named beam_alloc_*, never
    # __*__: nothing with a double underscore goes into user code.
    quote do
      @beam_alloc_nif_use BeamAlloc.Nif.validate_use_options!(unquote(opts), __ENV__)
      # (Values, not expressions, in the functions below.)
      @beam_alloc_nif_options @beam_alloc_nif_use.nifs
      @beam_alloc_nif_load_info @beam_alloc_nif_use.load_info
      @beam_alloc_nif_app @beam_alloc_nif_use.otp_app
      @beam_alloc_nif_library @beam_alloc_nif_use.library
      @on_load :beam_alloc_load_nif
      @beam_alloc_nif_keys Map.keys(@beam_alloc_nif_options)
      @before_compile BeamAlloc.Nif

      @doc false
      def beam_alloc_nif_options, do: @beam_alloc_nif_options

      @doc false
      def beam_alloc_load_nif do
        app = @beam_alloc_nif_app
        library = @beam_alloc_nif_library

        # (load_nif must be called from this module.)
        case BeamAlloc.Nif.library_path(app, library) do
          {:ok, path} ->
            path
            |> :erlang.load_nif(@beam_alloc_nif_load_info)
            |> BeamAlloc.Nif.explain_load(path, library)

          {:error, _} = error ->
            error
        end
      end
    end
  end

  @doc false
  # Every function :nifs names must be one of the module's: a typo there
  # is said at compile time, not only when the library refuses the name
  # at load.
  defmacro __before_compile__(env) do
    # Any kind: a defp stub, called by a public wrapper, is replaced by
    # the NIF just the same.
    defs = Module.definitions_in(env.module)

    missing =
      env.module
      |> Module.get_attribute(:beam_alloc_nif_keys)
      |> Enum.reject(fn
        {name, arity} -> {name, arity} in defs
        name -> Enum.any?(defs, fn {def_name, _} -> def_name == name end)
      end)

    if missing != [] do
      raise ArgumentError,
            "use BeamAlloc.Nif in #{inspect(env.module)}: :nifs names " <>
              Enum.map_join(missing, ", ", &describe/1) <>
              ", which the module does not define (each NIF needs its stub, " <>
              "def name(...), do: :erlang.nif_error(:not_loaded))"
    end

    nil
  end

  @doc false
  # What the on_load of a module that uses BeamAlloc.Nif returns for
  # load_nif's result (path: what it was given, without extension): :ok,
  # or an error that says what to do where it can.
  def explain_load(result, path, library) do
    result
    |> :beam_alloc.explain_load_error()
    |> explain_missing(path, library)
  end

  # No library file at all (not a dependency of it missing, which dlopen
  # words the same way on Linux): it was not built, most often because the
  # Mix project does not run beam_alloc's compiler for it. By the file, not
  # the message, which differs from one C library to the next.
  defp explain_missing({:error, {:load_failed, text}} = error, path, library)
       when is_list(text) do
    if File.exists?(to_string(path) <> ".so") do
      error
    else
      hint =
        " (no #{path}.so: is :beam_alloc in the compilers: of the mix.exs, " <>
          "compilers: [:beam_alloc] ++ Mix.compilers(), with " <>
          "beam_alloc: [nifs: [{#{inspect(String.to_atom(library))}, [...sources]}]]?)"

      {:error, {:load_failed, text ++ String.to_charlist(hint)}}
    end
  end

  defp explain_missing(result, _path, _library), do: result

  @doc false
  # Where the library of app is: {:ok, charlist} | {:error, reason}.
  # (An unknown app, an otp_app: typo, said {:no_priv_dir, app, :bad_name}
  # alone: the reason is now a text that names the option.)
  def library_path(app, library) do
    case :code.priv_dir(app) do
      {:error, _} ->
        hint =
          "no application #{inspect(app)} is on the code path, so no priv/ to load " <>
            "#{library}.so from: otp_app: names the application whose priv/ holds " <>
            "the NIF library (left out, it is the Mix project's own)"

        {:error, {:no_priv_dir, app, String.to_charlist(hint)}}

      priv ->
        {:ok, :filename.join(priv, String.to_charlist(library))}
    end
  end

  @doc false
  # The options of `use BeamAlloc.Nif` in caller's module, checked.
  def validate_use_options!(opts, caller) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "use BeamAlloc.Nif expects a keyword list of options, got: #{inspect(opts)}"
    end

    opts = Keyword.validate!(opts, [:library, :otp_app, :load_info, nifs: []])

    library =
      case opts[:library] do
        library when is_binary(library) and library != "" ->
          library |> inside_priv!() |> without_extension!()

        nil ->
          raise ArgumentError,
                "use BeamAlloc.Nif expects :library, the NIF library's path in priv/ " <>
                  "without extension, e.g. library: \"my_nif\""

        other ->
          raise ArgumentError,
                "invalid value for :library option, expected a non-empty string, got: " <>
                  inspect(other)
      end

    otp_app =
      case Keyword.fetch(opts, :otp_app) do
        {:ok, app} when is_atom(app) and app not in [nil, true, false] ->
          app

        {:ok, other} ->
          raise ArgumentError,
                "invalid value for :otp_app option, expected an application name, got: " <>
                  inspect(other)

        :error ->
          default_otp_app(caller)
      end

    nifs = validate_nifs!(opts[:nifs])
    %{library: library, otp_app: otp_app, nifs: nifs, load_info: load_info!(opts, nifs)}
  end

  # What load_nif gets: the per-NIF options, alone or under beam_alloc in
  # the library's own map (where BEAM_NIF_INIT looks for them).
  defp load_info!(opts, nifs) do
    case Keyword.fetch(opts, :load_info) do
      :error ->
        nifs

      {:ok, info} when is_map(info) and not is_map_key(info, :beam_alloc) ->
        Map.put(info, :beam_alloc, nifs)

      {:ok, info} when is_map(info) ->
        raise ArgumentError,
              "invalid value for :load_info option: the key beam_alloc is where " <>
                "the :nifs options go, got: #{inspect(info)}"

      {:ok, other} ->
        raise ArgumentError,
              "invalid value for :load_info option, expected a map of the library's " <>
                "own settings, got: #{inspect(other)}"
    end
  end

  # The path is priv/'s: an absolute one, or one with a .. segment,
  # loaded a library from anywhere (:filename.join/2 takes an absolute
  # second part as it is) while the docs say priv/ (bad-arguments hunt).
  defp inside_priv!(library) do
    if Path.type(library) != :relative or ".." in Path.split(library) or
         String.contains?(library, <<0>>) do
      raise ArgumentError,
            "invalid value for :library option, expected a path inside the " <>
              "application's priv/ directory (relative, without ..), got: " <>
              inspect(library)
    end

    library
  end

  # load_nif adds the extension itself: "my_nif.so" looked for
  # my_nif.so.so.
  defp without_extension!(library) do
    if Path.extname(library) in [".so", ".dll", ".dylib"] do
      raise ArgumentError,
            "invalid value for :library option, expected the path without extension: " <>
              "library: #{inspect(Path.rootname(library))}, got: #{inspect(library)}"
    end

    library
  end

  # A name given twice: Map.new kept the last one silently.
  defp no_duplicates!(pairs, what) do
    case Enum.map(pairs, &elem(&1, 0)) -- Enum.uniq(Enum.map(pairs, &elem(&1, 0))) do
      [] ->
        :ok

      [key | _] ->
        raise ArgumentError, "#{what}: #{describe(key)} is given more than once"
    end
  end

  defp default_otp_app(caller) do
    app = Code.ensure_loaded?(Mix.Project) && Mix.Project.config()[:app]

    app ||
      raise ArgumentError,
            "use BeamAlloc.Nif in #{inspect(caller.module)} needs :otp_app, " <>
              "the application whose priv/ holds the NIF library (no Mix project to take it from)"
  end

  defp validate_nifs!(nifs) do
    # (A proper list first: Map.new/2 raises a FunctionClauseError on an
    # improper one, which would hide this error.)
    unless is_list(nifs) and not List.improper?(nifs) do
      raise ArgumentError,
            "invalid value for :nifs option, expected a keyword list of NIF names " <>
              "and their options, got: #{inspect(nifs)}"
    end

    pairs =
      Enum.map(nifs, fn
        {key, options} ->
          {validate_key!(key), validate_nif_options!(key, options)}

        other ->
          raise ArgumentError,
                "invalid entry in :nifs option, expected {name, options}, got: #{inspect(other)}"
      end)

    no_duplicates!(pairs, "the :nifs option")
    Map.new(pairs)
  end

  defp validate_key!(name) when is_atom(name) and name not in [nil, true, false], do: name

  defp validate_key!({name, arity} = key)
       when is_atom(name) and is_integer(arity) and arity in 0..255,
       do: key

  defp validate_key!(other) do
    raise ArgumentError,
          "invalid NIF in :nifs option, expected a name or {name, arity}, got: #{inspect(other)}"
  end

  defp validate_nif_options!(key, options) do
    unless Keyword.keyword?(options) do
      raise ArgumentError,
            "invalid options for NIF #{describe(key)} in :nifs option, " <>
              "expected a keyword list, got: #{inspect(options)}"
    end

    no_duplicates!(options, "the options of NIF #{describe(key)}")
    Map.new(options, fn {name, value} -> {name, validate_nif_option!(key, name, value)} end)
  end

  defp validate_nif_option!(_key, name, value)
       when name in [:leak_check, :scratch, :raise_on_misuse] and is_boolean(value),
       do: value

  defp validate_nif_option!(_key, :allocator, value) when value in @allocators, do: value

  defp validate_nif_option!(key, name, value)
       when name in [:leak_check, :scratch, :raise_on_misuse] do
    raise ArgumentError,
          "invalid value for #{inspect(name)} of NIF #{describe(key)}, " <>
            "expected a boolean, got: #{inspect(value)}"
  end

  defp validate_nif_option!(key, :allocator, value) do
    raise ArgumentError,
          "invalid value for :allocator of NIF #{describe(key)}, " <>
            "expected :raw, :large or :gpa, got: #{inspect(value)}"
  end

  defp validate_nif_option!(key, name, _value) do
    raise ArgumentError,
          "unknown option #{inspect(name)} for NIF #{describe(key)}, " <>
            "the known options are: :allocator, :leak_check, :raise_on_misuse, :scratch"
  end

  defp describe({name, arity}), do: "#{name}/#{arity}"
  defp describe(name), do: Atom.to_string(name)
end
