defmodule BeamAlloc.CxxTest do
  # <beam_alloc.hpp>: STL and pmr containers inside a leak-checked NIF.
  use ExUnit.Case, async: true

  test "std::vector, std::map and std::pmr containers give back everything" do
    n = 20_000
    expected = Enum.sum(0..(n - 1)) + 2 * div(n, 10)
    assert CxxNif.containers(n) == expected
  end

  test "std::allocate_shared and a std::thread on a copy of the call's allocator give back everything" do
    # The thread's own beam_allocator is the raw allocator, not the NIF's.
    assert CxxNif.shared_and_thread() == {:raw, 2 + 1000}
  end

  test "a block the C++ code keeps is the call's leak" do
    CxxNif.take_reports()

    assert_raise RuntimeError, "memory leak detected in function `CxxNif.leak/0`", fn ->
      CxxNif.leak()
    end

    assert [report] = Enum.filter(CxxNif.take_reports(), &(&1 =~ "leak: 800 bytes"))
    # one frame for the NIF, though BEAM_NIF's guard calls its body
    assert BeamAlloc.Symbolizer.resolve_sites(report) =~
             ~r"allocated from leak \(test/nifs/cxx_nif\.cpp:\d+\)$"
  end

  test "a block a container keeps is reported with the NIF's line under the library's frames" do
    CxxNif.take_reports()

    assert_raise RuntimeError,
                 ~r"memory leak detected in function `CxxNif.leak_in_containers/0`",
                 fn ->
                   CxxNif.leak_in_containers()
                 end

    reports = Enum.filter(CxxNif.take_reports(), &(&1 =~ "leak: 4 bytes"))
    assert length(reports) == 2

    # The test NIFs' C++ was built without frame pointers (unlike users'
    # builds): the walk ended inside libstdc++, at _M_realloc_insert.
    for report <- reports do
      assert BeamAlloc.Symbolizer.resolve_sites(report) =~
               ~r" <- leak_in_containers \(test/nifs/cxx_nif\.cpp:\d+\)$"
    end
  end

  test "an exception that leaves a NIF body is raised, not the VM's abort" do
    assert_raise RuntimeError, "uncaught C++ exception: boom", fn -> CxxNif.throws() end
  end

  test "an exception that leaves a continuation defined with BEAM_NIF is raised too" do
    assert_raise RuntimeError, "uncaught C++ exception: later boom", fn ->
      CxxNif.throws_later()
    end
  end

  test "an exception out of the .allocator function is raised and the body does not run" do
    for nif <- [:throws_in_allocator, :throws_in_allocator_checked] do
      assert_raise RuntimeError, "uncaught C++ exception: picker boom", fn ->
        apply(CxxNif, nif, [])
      end
    end

    assert CxxNif.picked_body_runs() == 0
  end

  test "an exception's text is cut short with ... and kept a string" do
    e = assert_raise RuntimeError, fn -> CxxNif.throws_text(String.duplicate("é", 200)) end
    assert byte_size(e.message) == 255
    assert String.ends_with?(e.message, "...")
    assert String.valid?(e.message)

    e =
      assert_raise RuntimeError, fn ->
        CxxNif.throws_text(<<0xFF, 0xC3, "ok ", 0xED, 0xA0, 0x80>>)
      end

    assert e.message == "uncaught C++ exception: ??ok ???"
  end

  test "an over-aligned type on the raw allocator raises saying so, not out of memory" do
    for way <- [:vector, :pmr] do
      assert_raise RuntimeError,
                   "alignment 32 is above what the raw allocator serves (8): " <>
                     "give the NIF .allocator = a large or general purpose allocator " <>
                     "(one over the large allocator: a general purpose allocator's " <>
                     "large blocks come from its backing)",
                   fn -> CxxNif.overaligned(way) end

      # a std::bad_alloc still, to code that catches that
      assert CxxNif.overaligned_caught(way) == :caught
      assert CxxNif.overaligned_gpa(way) == 1
    end
  end

  test "a std::pmr pool resource needs more than the raw allocator's alignment, and says so" do
    e = assert_raise RuntimeError, fn -> CxxNif.pool_vector_raw() end
    assert e.message =~ ~r/^alignment \d+ is above what the raw allocator serves \(8\): /
    assert CxxNif.pool_vector_gpa() == 100
  end

  test "an over-aligned type says so under fault injection too, whose plan wraps raw" do
    e =
      assert_raise BeamAlloc.AllocationFailureError, fn ->
        BeamAlloc.Testing.check_all_allocation_failures(fn -> CxxNif.overaligned(:vector) end)
      end

    assert e.message =~ "alignment 32 is above what the raw allocator serves (8)"
    refute e.message =~ "out of memory"
  end

  test "a failed request inside the standard library's code names the NIF's line, after them" do
    e =
      assert_raise BeamAlloc.AllocationFailureError, fn ->
        BeamAlloc.Testing.check_all_allocation_failures(fn -> CxxNif.grow(100) end,
          expect: :error_tuple
        )
      end

    assert [%{request: %{site: site}} | _] = e.problems
    # std::vector's frames (its allocation is in _M_realloc_insert, a
    # function of its own), then grow's push_back: the line to look at
    assert site =~ ~r"^allocate \(\S+alloc_traits\.h:\d+\) <- "
    assert site =~ ~r" <- grow \(test/nifs/cxx_nif\.cpp:\d+\)$"
    assert e.message =~ ~r"<- grow \(test/nifs/cxx_nif\.cpp:\d+\)"
  end

  # push_at's two lines call the same code of std::vector's, which makes
  # the request: one return address, two lines of the author's. The first
  # run pushes at one, the others at the other; the failed request is the
  # other's, whatever the first run's site for that return address was.
  test "a failed request inside the standard library's code names the line that made it in its own run" do
    source = "test/nifs/cxx_nif.cpp"
    runs = :counters.new(1, [])

    e =
      assert_raise BeamAlloc.AllocationFailureError, fn ->
        BeamAlloc.Testing.check_all_allocation_failures(
          fn ->
            :counters.add(runs, 1, 1)
            CxxNif.push_at(:counters.get(runs, 1))
          end,
          expect: :error_tuple
        )
      end

    assert [%{request: %{site: site}} | _] = e.problems
    other = BeamAlloc.Test.Reports.line_of(source, "push other")
    assert site =~ ~r" <- push_at \(test/nifs/cxx_nif\.cpp:#{other}\)$"
  end

  # Which frames of a request's site hold the author's code (the site
  # ends at the first that does): by the frame's file, an absolute path.
  test "the author's code is known by its file wherever the project is" do
    # A project built where it is installed, under /usr/lib; one in a
    # folder named c++; its files of any extension, or none.
    authors = [
      "/usr/lib/erlang/lib/my_app-1.0/c_src/my_nif.cpp",
      "/home/dev/c++/my_app/c_src/my_nif.cc",
      "/home/dev/my_app/c_src/my_nif.cxx",
      "/home/dev/my_app/c_src/vec.hpp",
      "/home/dev/my_app/c_src/impl"
    ]

    # The standard library's headers (libstdc++'s, libc++'s), the system's
    # and the compiler's, beam_alloc's own.
    others = [
      "/usr/include/c++/12/bits/alloc_traits.h",
      "/usr/include/c++/12/bits/vector.tcc",
      "/usr/include/c++/12/memory_resource",
      "/usr/include/x86_64-linux-gnu/c++/12/bits/c++allocator.h",
      "/usr/lib/llvm-14/bin/../include/c++/v1/vector",
      "/Library/Developer/CommandLineTools/usr/include/c++/v1/__memory/allocator.h",
      "/usr/lib/gcc/x86_64-linux-gnu/12/include/stddef.h",
      "/usr/include/boost/container/vector.hpp",
      "/usr/local/include/absl/container/flat_hash_map.h",
      "/home/dev/my_app/deps/beam_alloc/include/beam_alloc.hpp"
    ]

    for {file, expected} <- Enum.map(authors, &{&1, true}) ++ Enum.map(others, &{&1, false}) do
      assert :beam_alloc_symbolizer.authors_frame({"allocate", file, 318}) == expected, file
    end
  end

  test "std::bad_alloc left uncaught surfaces as out of memory under fault injection" do
    assert CxxNif.grow(100) == 100

    assert {:ok, count} =
             BeamAlloc.Testing.check_all_allocation_failures(fn -> CxxNif.grow(100) end)

    # one allocation per growth of the vector's capacity
    assert count >= 7

    # and it is a raise, "out of memory": not the error tuple asked for here
    assert_raise BeamAlloc.AllocationFailureError, ~r/RuntimeError.*out of memory/, fn ->
      BeamAlloc.Testing.check_all_allocation_failures(fn -> CxxNif.grow(100) end,
        expect: :error_tuple
      )
    end
  end
end
