ExUnit.configure(exclude: [:soak])
ExUnit.start()
