defmodule BeamAlloc.HooksTest do
  # <beam_alloc/hooks.h>: a C library's allocator hooks of each shape with
  # no shim in the NIF (test/nifs/hooks_nif.c), over a library of its own
  # (test/nifs/foreign/hooklib.c) standing for cJSON or libxml2 (global
  # hooks), OpenSSL (global hooks told file and line), brotli or protobuf-c
  # (a context pointer), pcre2 (a context pointer passed last) and Lua
  # (lua_Alloc).
  use ExUnit.Case, async: true

  alias BeamAlloc.Testing

  @text "  the quick  brown fox jumps over the lazy dog  "
  @words "the quick brown fox jumps over the lazy dog"

  # fun gives the words, and under fault injection fails each of at least
  # at_least allocations without a misuse or a leak.
  defp assert_words_under_faults(fun, at_least) do
    assert fun.() == @words
    assert {:ok, count} = Testing.check_all_allocation_failures(fun)
    assert count >= at_least
  end

  # A leak through a hook names the library's function, not a shim's (the
  # hook's own caller).
  defp assert_leak_names(nif, fun, library_function) do
    HooksNif.take_reports()

    assert_raise RuntimeError, "memory leak detected in function `HooksNif.#{nif}`", fun

    leaks = Enum.filter(HooksNif.take_reports(), &(&1 =~ "leak:"))
    assert leaks != []
    site = ~r/from #{library_function} \(libhooklib\.so/
    assert Enum.all?(leaks, &(&1 =~ site)), inspect(leaks)
  end

  describe "BEAM_MALLOC_HOOKS (global hooks)" do
    test "the library runs on its own instance, counted under its stats key" do
      assert HooksNif.global_words(@text) == @words
      assert HooksNif.global_live_bytes() == 0
      assert %{hooklib: %{live_bytes: 0}} = BeamAlloc.stats(HooksNif)
    end

    test "on the call's allocator, leak_check and fault injection reach the library's blocks" do
      # calloc, realloc, a strdup a word, the result's malloc
      assert_words_under_faults(fn -> HooksNif.global_words_checked(@text) end, 12)
    end

    test "a leak inside the library names the library's function" do
      assert_leak_names("global_leak/0", fn -> HooksNif.global_leak() end, "hooklib_words")
    end
  end

  describe "beam_hook_malloc and beam_hook_free (a context pointer)" do
    test "run on the call's allocator, fault injection included" do
      assert_words_under_faults(fn -> HooksNif.ctx_words(@text) end, 1)
    end
  end

  describe "BEAM_MALLOC_HOOKS_FILE_LINE (OpenSSL's CRYPTO_set_mem_functions)" do
    test "run on the call's allocator, fault injection included" do
      # the copy, realloc(NULL) and the grow
      assert_words_under_faults(fn -> HooksNif.fl_words_checked(@text) end, 3)
    end

    test "a leak names the library's function" do
      assert_leak_names("fl_leak/1", fn -> HooksNif.fl_leak(@text) end, "hooklib_fl_words")
    end
  end

  describe "beam_hook_malloc_ctx_last (pcre2's general context)" do
    test "run on the call's allocator, fault injection included" do
      assert_words_under_faults(fn -> HooksNif.last_words(@text) end, 1)
    end

    test "a leak names the library's function" do
      assert_leak_names("last_leak/1", fn -> HooksNif.last_leak(@text) end, "hooklib_last_words")
    end
  end

  describe "beam_lua_alloc (sized frees)" do
    test "grows, shrinks and frees with Lua's sizes, fault injection included" do
      assert HooksNif.lua_words("") == ""
      # the first block and four doublings to 64 bytes (the shrink is in place)
      assert_words_under_faults(fn -> HooksNif.lua_words(@text) end, 5)
    end
  end
end
