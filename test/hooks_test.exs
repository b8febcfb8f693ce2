defmodule BeamAlloc.HooksTest do
  # <beam_alloc/hooks.h>: a C library's allocator hooks of each shape with
  # no shim in the NIF (test/nifs/hooks_nif.c), over a library of its own
  # (test/nifs/foreign/hooklib.c) standing for cJSON or libxml2 (global
  # hooks), brotli or protobuf-c (a context pointer) and Lua (lua_Alloc).
  use ExUnit.Case, async: true

  alias BeamAlloc.Testing

  @text "  the quick  brown fox jumps over the lazy dog  "
  @words "the quick brown fox jumps over the lazy dog"

  describe "BEAM_MALLOC_HOOKS (global hooks)" do
    test "the library runs on its own instance, counted under its stats key" do
      assert HooksNif.global_words(@text) == @words
      assert HooksNif.global_live_bytes() == 0
      assert %{hooklib: %{live_bytes: 0}} = BeamAlloc.stats(HooksNif)
    end

    test "on the call's allocator, leak_check and fault injection reach the library's blocks" do
      assert HooksNif.global_words_checked(@text) == @words

      assert {:ok, count} =
               Testing.check_all_allocation_failures(fn ->
                 HooksNif.global_words_checked(@text)
               end)

      # calloc, realloc, a strdup a word, the result's malloc
      assert count >= 12
    end

    test "a leak inside the library names the library's function" do
      HooksNif.take_reports()

      assert_raise RuntimeError,
                   "memory leak detected in function `HooksNif.global_leak/0`",
                   fn -> HooksNif.global_leak() end

      leaks = Enum.filter(HooksNif.take_reports(), &(&1 =~ "leak:"))
      assert leaks != []
      assert Enum.all?(leaks, &(&1 =~ ~r/from hooklib_words \(libhooklib\.so/)), inspect(leaks)
    end
  end

  describe "beam_hook_malloc and beam_hook_free (a context pointer)" do
    test "run on the call's allocator, fault injection included" do
      assert HooksNif.ctx_words(@text) == @words

      assert {:ok, count} =
               Testing.check_all_allocation_failures(fn -> HooksNif.ctx_words(@text) end)

      assert count >= 1
    end
  end

  describe "beam_lua_alloc (sized frees)" do
    test "grows, shrinks and frees with Lua's sizes, fault injection included" do
      assert HooksNif.lua_words(@text) == @words
      assert HooksNif.lua_words("") == ""

      assert {:ok, count} =
               Testing.check_all_allocation_failures(fn -> HooksNif.lua_words(@text) end)

      # the first block and four doublings to 64 bytes (the shrink is in place)
      assert count >= 5
    end
  end
end
