defmodule BeamAlloc.GuideExamplesTest do
  # Every code example of guides/allocators.md is a test: the C of each must
  # be in a guide NIF (test/nifs/guide*.c; declarations: the public header),
  # the Elixir in a guide test or support module, the Erlang in
  # test/erlang/, verbatim up to indentation and blank lines. Output shown
  # in ```text blocks is exempt.
  use ExUnit.Case, async: true

  @root Path.expand("..", __DIR__)
  @guide Path.join(@root, "guides/allocators.md")
  @sources %{
    "c" => ["test/nifs/guide*.c", "include/beam_alloc.h"],
    "elixir" => ["test/guide*_test.exs", "test/support/guide*.ex"],
    "erlang" => ["test/erlang/*.erl"]
  }

  test "every example of the guide is quoted from a test" do
    examples = examples(File.read!(@guide))
    assert length(examples) >= 30

    for {lang, code, line} <- examples do
      assert Map.has_key?(@sources, lang),
             "guides/allocators.md:#{line}: a ```#{lang} block, which no test can hold"

      assert quoted?(lang, code),
             "guides/allocators.md:#{line}: this #{lang} example is in none of " <>
               "#{Enum.join(@sources[lang], ", ")}:\n\n#{code}"
    end
  end

  test "every file the guide names exists" do
    paths = Regex.scan(~r/`((?:test|bench|include|lib|src)\/[\w\/.]+)`/, File.read!(@guide))
    assert paths != []

    for [_, path] <- paths do
      assert File.exists?(Path.join(@root, path)), "guides/allocators.md names #{path}"
    end
  end

  # A block's end misplaced leaves code as prose (a C #include renders as a
  # heading) and swallows the next block's opening fence as code.
  test "README's code sits inside its fences" do
    {_, strays} =
      File.read!(Path.join(@root, "README.md"))
      |> String.split("\n")
      |> Enum.with_index(1)
      |> Enum.reduce({false, []}, fn
        {"```", _}, {true, acc} -> {false, acc}
        {"```" <> _ = l, n}, {true, acc} -> {true, [{n, l} | acc]}
        {"```" <> _, _}, {false, acc} -> {true, acc}
        {"#include" <> _ = l, n}, {false, acc} -> {false, [{n, l} | acc]}
        _, state -> state
      end)

    assert strays == [], "README.md: #{inspect(Enum.reverse(strays))}"
  end

  # A newcomer copies a NIF whole into c_src/: each README block that is a
  # whole NIF (it ends in BEAM_NIF_INIT) must compile as written (a `{ ... }`
  # body did not), and the Elixir module of its section that loads it must
  # define the functions of its table, no fewer (the load fails) and no
  # more (a stub that stays a stub).
  test "README's NIFs compile, and their modules define their tables" do
    nifs = readme_nifs()

    assert Enum.map(nifs, &elem(&1, 0)) == ["Quick start", "Writing a NIF with it"],
           "README.md: whole NIFs in #{inspect(Enum.map(nifs, &elem(&1, 0)))}"

    for {section, c, blocks} <- nifs do
      {out, status} = cc_readme_nif(c, ~w(-fsyntax-only -std=c11 -Wall -Wextra -Werror))
      assert status == 0, "README.md (#{section}): its NIF does not compile:\n#{out}"

      assert {_, ex, _} = Enum.find(blocks, &loads_nif?/1),
             "README.md (#{section}): no Elixir module loads the NIF"

      assert elixir_stubs(ex) == nif_table(c),
             "README.md (#{section}): the module's stubs " <>
               "#{inspect(elixir_stubs(ex))} are not the NIF's table #{inspect(nif_table(c))}"
    end
  end

  # The Quick start is every file of a first project, in one place: the
  # Erlang module that loads its NIF under rebar3 exports the table too.
  test "README's Quick start holds its NIF's modules" do
    assert {_, c, blocks} = List.keyfind(readme_nifs(), "Quick start", 0),
           "README.md: no whole NIF in its Quick start"

    assert {_, erl, _} = Enum.find(blocks, &(elem(&1, 1) =~ "erlang:load_nif(")),
           "README.md (Quick start): no Erlang module loads the NIF"

    [_, exports] = Regex.run(~r/-export\(\[([^\]]*)\]\)/, erl)

    exported =
      for [_, name, arity] <- Regex.scan(~r/(\w+)\/(\d+)/, exports),
          do: {name, String.to_integer(arity)}

    assert Enum.sort(exported) == nif_table(c),
           "README.md (Quick start): the Erlang module's exports " <>
             "#{inspect(Enum.sort(exported))} are not the NIF's table #{inspect(nif_table(c))}"
  end

  # The failures the README shows for the Quick start's leak name the line
  # of the allocation its check_me leaks once the free is deleted.
  test "README's shown leak of the Quick start names its allocation's line" do
    {_, c, _} = List.keyfind(readme_nifs(), "Quick start", 0)
    lines = String.split(c, "\n")
    freed = Enum.find_index(lines, &(&1 =~ "delete this line"))
    assert freed, "README.md (Quick start): no free to delete in check_me"
    [_, var] = Regex.run(~r/beam_free\(beam_allocator, (\w+),/, Enum.at(lines, freed))
    alloc = Enum.find_index(lines, &(&1 =~ ~r/\b#{var} = beam_alloc\(/)) + 1

    shown =
      Regex.scan(~r/allocated from check_me\s+\(c_src\/my_nif\.c:(\d+)\)/, File.read!(readme()))

    assert length(shown) >= 2

    for [_, n] <- shown do
      assert String.to_integer(n) == alloc,
             "README.md: a leak of check_me shown at c_src/my_nif.c:#{n}, allocated at line #{alloc}"
    end
  end

  # The share of glibc's static TLS spare the README gives beam_alloc's
  # thread-locals grows with each one added: it is tls-check's bound, the
  # most any link order takes, and a NIF library that has none of its own
  # (the first NIF), linked as the builds link it, takes no more. What that
  # NIF takes hangs on the link's order, the compiler and each change to
  # the library's thread-locals (checked equal to README's figure, it
  # failed at every one); the bound is what tls-check holds under 512.
  test "README's static TLS figure is the library's thread-locals" do
    [_, said] = Regex.run(~r/thread-locals take at most (\d+)\s+bytes/, File.read!(readme()))

    [{_, c, _} | _] = readme_nifs()

    so = BeamAlloc.Test.TmpDir.path!("beam_alloc_readme_tls")
    lib = Path.join(@root, "build/libbeam_alloc.a")
    link = ~w(-shared -fPIC #{lib} -Wl,--exclude-libs,ALL -pthread -o #{so})
    {_, 0} = cc_readme_nif(c, ["-std=c11" | link])
    {phdrs, 0} = System.cmd("readelf", ["-lW", so])
    [_, memsz] = Regex.run(~r/^\s*TLS(?:\s+0x[0-9a-f]+){4}\s+0x([0-9a-f]+)/m, phdrs)
    measured = String.to_integer(memsz, 16)
    {sections, 0} = System.cmd("readelf", ["-SW", lib])
    {bound, 0} = tls_bound(sections)
    bound = String.to_integer(String.trim(bound))

    assert String.to_integer(said) == bound,
           "README.md: thread-locals take at most #{bound} bytes"

    assert bound >= measured, "scripts/tls-bound: #{bound}, the README's NIF: #{measured}"
  end

  # tls-check's bound reads the thread-locals' sections: where it finds none
  # (readelf missing or failing, or LTO objects, which have none until the
  # link) it gives no bound, where it said 0 and the check passed.
  test "tls-bound gives no bound without thread-local sections" do
    o = BeamAlloc.Test.TmpDir.path!("beam_alloc_tls_lto")

    {_, 0} =
      cc_readme_nif(
        "_Thread_local long x[4];\nlong *f(void) { return x; }\n",
        ~w(-flto -c -o #{o})
      )

    {lto, 0} = System.cmd("readelf", ["-SW", o])

    for input <- ["", lto] do
      {out, status} = tls_bound(input, stderr_to_stdout: true)
      assert status != 0 and not (out =~ ~r/^\d+$/m), "scripts/tls-bound gave #{inspect(out)}"
      assert out =~ "tls-bound: no thread-local sections in the input"
    end
  end

  # (Options: System.cmd's. The script says why it gives no bound on
  # standard error, which went to the terminal of every run.)
  defp tls_bound(sections, options \\ []) do
    input = BeamAlloc.Test.TmpDir.path!("beam_alloc_tls")
    File.write!(input, sections)
    System.cmd("awk", ["-f", Path.join(@root, "scripts/tls-bound"), input], options)
  end

  defp readme, do: Path.join(@root, "README.md")

  # {section, c, blocks} for each whole NIF of the README (a C block with
  # BEAM_NIF_INIT), in order, with every block of its section.
  defp readme_nifs do
    for section <- String.split(File.read!(readme()), ~r/^## /m),
        blocks = examples(section),
        {"c", c, _} <- blocks,
        c =~ "BEAM_NIF_INIT(" do
      [heading | _] = String.split(section, "\n", parts: 2)
      {heading, c, blocks}
    end
  end

  # {name, arity} of a NIF's ErlNifFunc table, sorted.
  defp nif_table(c) do
    for(
      [_, name, arity] <- Regex.scan(~r/\{"(\w+)", (\d+), \w+, /, c),
      do: {name, String.to_integer(arity)}
    )
    |> Enum.sort()
  end

  defp loads_nif?({lang, code, _}), do: lang == "elixir" and code =~ "use BeamAlloc.Nif"

  # {name, arity} of each `def f(...), do: :erlang.nif_error(...)`, sorted.
  defp elixir_stubs(ex) do
    for(
      [_, name, args] <- Regex.scan(~r/def (\w+)(\(.*\)|), do: :erlang\.nif_error/, ex),
      do: {name, arity(args)}
    )
    |> Enum.sort()
  end

  defp arity(""), do: 0
  defp arity(args), do: length(String.split(args, ","))

  defp cc_readme_nif(c, args) do
    # (In a folder of its own: cc takes the language from the name's .c.)
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_readme")
    File.mkdir_p!(dir)
    src = Path.join(dir, "readme_nif.c")
    File.write!(src, c)
    erts = Path.join([:code.root_dir(), "erts-#{:erlang.system_info(:version)}", "include"])
    includes = ["-I#{@root}/include", "-I#{erts}"]
    System.cmd(System.get_env("CC") || "cc", [src | includes ++ args], stderr_to_stdout: true)
  end

  # {lang, code, line} for each fenced block but ```text.
  defp examples(markdown) do
    markdown
    |> String.split("\n")
    |> Enum.with_index(1)
    |> Enum.reduce({[], nil}, fn
      {"```" <> rest, line}, {acc, nil} -> {acc, {String.trim(rest), [], line + 1}}
      {"```", _}, {acc, {lang, lines, line}} -> {[{lang, lines, line} | acc], nil}
      {text, _}, {acc, {lang, lines, line}} -> {acc, {lang, [text | lines], line}}
      _, state -> state
    end)
    |> elem(0)
    |> Enum.reject(fn {lang, _, _} -> lang == "text" end)
    |> Enum.map(fn {lang, lines, line} ->
      {lang, lines |> Enum.reverse() |> Enum.join("\n"), line}
    end)
    |> Enum.reverse()
  end

  defp quoted?(lang, code) do
    wanted = normalize(code)

    @sources[lang]
    |> Enum.flat_map(&Path.wildcard(Path.join(@root, &1)))
    |> Enum.any?(fn path -> String.contains?(normalize(File.read!(path)), wanted) end)
  end

  # Lines trimmed, blank ones dropped, framed so that only whole lines match.
  defp normalize(text) do
    lines =
      text
      |> String.split("\n")
      |> Enum.map(&String.trim/1)
      |> Enum.reject(&(&1 == ""))

    "\n" <> Enum.join(lines, "\n") <> "\n"
  end
end
