%% The beam_alloc application as rebar3 builds it (erlang/beam_alloc.app.src):
%% a supervisor for beam_alloc_reporter, the process that logs the NIF
%% libraries' reports with source lines and keeps them for
%% beam_alloc:take_reports/0, and beam_alloc_collector, which gives back
%% what idle libraries hold and no longer need. (A Mix build runs the Elixir application,
%% BeamAlloc.Application, instead.)
-module(beam_alloc_app).
-behaviour(application).
-behaviour(supervisor).

-export([start/2, stop/1, init/1]).

start(_Type, _Args) ->
    supervisor:start_link({local, beam_alloc_sup}, ?MODULE, []).

stop(_State) ->
    ok.

init([]) ->
    Reporter = #{id => beam_alloc_reporter,
                 start => {beam_alloc_reporter, start_link, []}},
    Collector = #{id => beam_alloc_collector,
                  start => {beam_alloc_collector, start_link, []}},
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10},
          [Reporter, Collector]}}.
