defmodule BeamAlloc.DialyzerTest do
  # Dialyzer on beam_alloc's own modules (lib/ and erlang/, not the
  # tests'): clean, so that whoever analyses them (a user's run puts them
  # in the PLT and warns of its own code only) sees nothing. The PLT holds
  # only the modules ours call or implement behaviours of (OTP's, Elixir's,
  # Mix's): a full one of erts, kernel, stdlib, elixir, ex_unit and mix
  # takes minutes. Found auditing the CI tools: an opaque queue matched
  # as a tuple in beam_alloc_reporter, and two functions of BeamAlloc.Case
  # that only raise, unsaid (fail_lost/3; __failed__/3, warned of from
  # OTP 26 on).
  use ExUnit.Case, async: false

  @moduletag timeout: 120_000

  @root File.cwd!()

  test "dialyzer finds nothing in beam_alloc's own modules" do
    # Debian ships it apart (erlang-dialyzer; erlang-nox does not bring it):
    # say so rather than fail on an undefined :dialyzer.run/1.
    unless Code.ensure_loaded?(:dialyzer) do
      flunk(
        "dialyzer is not installed (Debian: erlang-dialyzer): run scripts/ensure-deps " <>
          "(or make deps), then mix test again"
      )
    end

    ebin = Path.join(Mix.Project.app_path(), "ebin")

    ours =
      for beam <- Path.wildcard(Path.join(ebin, "*.beam")),
          source(beam) |> String.starts_with?([@root <> "/lib/", @root <> "/erlang/"]),
          do: String.to_charlist(beam)

    assert length(ours) > 10
    names = Enum.map(ours, &List.to_atom(:filename.basename(&1, ~c".beam")))

    used =
      for beam <- ours,
          {:ok, {_, [imports: imports, attributes: attributes]}} =
            :beam_lib.chunks(beam, [:imports, :attributes]),
          module <-
            Enum.map(imports, &elem(&1, 0)) ++
              List.flatten(Keyword.get_values(attributes, :behaviour)),
          module not in names,
          uniq: true,
          do: module

    plt = Path.join(BeamAlloc.Test.TmpDir.path!("beam_alloc_plt"), "used.plt")
    File.mkdir_p!(Path.dirname(plt))
    used_beams = for m <- used, path = beam_of(m), do: path
    _ = :dialyzer.run(analysis_type: :plt_build, files: used_beams, output_plt: to_charlist(plt))

    warnings = :dialyzer.run(init_plt: to_charlist(plt), files: ours)
    assert Enum.map(warnings, &to_string(:dialyzer.format_warning(&1))) == []
  end

  # A preloaded module (erlang, persistent_term, ...) has no path in
  # :code.which/1, but its beam is in erts' ebin. Left out, the PLT missed
  # erlang itself: OTP 26 and later warn of unknown functions by default,
  # and every BIF call was one (OTP 27: "Unknown function
  # erlang:monitor/2", ...).
  defp beam_of(module) do
    case :code.which(module) do
      :preloaded -> preloaded_beam(module)
      path when is_list(path) -> path
      _ -> nil
    end
  end

  defp preloaded_beam(module) do
    beam = Path.join([:code.lib_dir(:erts), "ebin", "#{module}.beam"])
    if File.regular?(beam), do: to_charlist(beam)
  end

  defp source(beam) do
    {:ok, {_, [compile_info: info]}} = :beam_lib.chunks(to_charlist(beam), [:compile_info])
    to_string(info[:source])
  end
end
