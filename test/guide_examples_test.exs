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

  # A newcomer copies the first NIF whole into c_src/: it must compile as
  # written (a `{ ... }` body did not), and the Elixir module shown after
  # it must define every function its table lists, or the load fails.
  test "README's first NIF compiles, and its module defines its table" do
    {c, blocks} = readme_first_nif()
    {out, status} = cc_readme_nif(c, ~w(-fsyntax-only -std=c11 -Wall -Wextra -Werror))
    assert status == 0, "README.md's first NIF does not compile:\n#{out}"

    assert {_, ex, _} = Enum.find(blocks, &(elem(&1, 0) == "elixir")),
           "README.md: no Elixir module loads the first NIF"

    for [_, name, arity] <- Regex.scan(~r/\{"(\w+)", (\d+), \w+, /, c) do
      params = if arity == "0", do: "", else: "\\(.*\\)"

      assert ex =~ ~r/def #{name}#{params}, do: :erlang\.nif_error/,
             "README.md: the module after the first NIF lacks #{name}/#{arity}"
    end
  end

  # The share of glibc's static TLS spare the README gives beam_alloc's
  # thread-locals grows with each one added: read it off a NIF library that
  # has none of its own (the first NIF), linked as the builds link it.
  test "README's static TLS figure is the library's thread-locals" do
    [_, said] = Regex.run(~r/thread-locals take (\d+)\s+bytes/, File.read!(readme()))
    {c, _} = readme_first_nif()

    so =
      Path.join(
        System.tmp_dir!(),
        "beam_alloc_readme_tls_#{System.unique_integer([:positive])}.so"
      )

    on_exit(fn -> File.rm(so) end)
    lib = Path.join(@root, "build/libbeam_alloc.a")
    link = ~w(-shared -fPIC #{lib} -Wl,--exclude-libs,ALL -pthread -o #{so})
    {_, 0} = cc_readme_nif(c, ["-std=c11" | link])
    {phdrs, 0} = System.cmd("readelf", ["-lW", so])
    [_, memsz] = Regex.run(~r/^\s*TLS(?:\s+0x[0-9a-f]+){4}\s+0x([0-9a-f]+)/m, phdrs)
    measured = String.to_integer(memsz, 16)
    assert String.to_integer(said) == measured, "README.md: thread-locals take #{measured} bytes"
  end

  defp readme, do: Path.join(@root, "README.md")

  # The first NIF's C, and every block of its section.
  defp readme_first_nif do
    [_, after_heading] = String.split(File.read!(readme()), "## Writing a NIF with it\n")
    [section | _] = String.split(after_heading, ~r/^## /m)
    blocks = examples(section)
    {_, c, _} = Enum.find(blocks, &(elem(&1, 0) == "c"))
    {c, blocks}
  end

  defp cc_readme_nif(c, args) do
    src =
      Path.join(System.tmp_dir!(), "beam_alloc_readme_#{System.unique_integer([:positive])}.c")

    File.write!(src, c)
    erts = Path.join([:code.root_dir(), "erts-#{:erlang.system_info(:version)}", "include"])
    includes = ["-I#{@root}/include", "-I#{erts}"]

    result =
      System.cmd(System.get_env("CC") || "cc", [src | includes ++ args], stderr_to_stdout: true)

    File.rm(src)
    result
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
