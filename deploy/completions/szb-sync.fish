# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_szb_sync_global_optspecs
    string join \n c/config= log-format= h/help V/version
end

function __fish_szb_sync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_szb_sync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_szb_sync_using_subcommand
    set -l cmd (__fish_szb_sync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c szb-sync -n "__fish_szb_sync_needs_command" -s c -l config -d 'Configuration file (TOML), for the commands that read one (all but mock-api, completions and man); before the command or after it. Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_needs_command" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -s V -l version -d 'Print version'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "sync" -d 'One pass over every configured pair, then exit (non-zero if any pair failed)'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "run" -d 'The daemon: apply migrations, sync at start and on schedule.cron, stop cleanly on SIGTERM'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "migrate" -d 'Apply the database migrations and exit'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "check" -d 'Check the configuration, the database and each agent\'s token (one request per agent)'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "status" -d 'Show each pair\'s mark, last run and last error; exits 1 when a configured pair is failing'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "rejects" -d 'List the items the platform sent that are not valid visits, newest first, with why'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "resync" -d 'Forget the marks of configured pairs so the next sync re-reads them from the start (after rejects were fixed upstream, say). Stored visits stay'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "mock-api" -d 'Serve the built-in simulator of the upstream API (reads no configuration file)'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "demo" -d 'Sync a simulated platform into a database of its own and show what landed: `szb_demo` on the configured server (created when missing), never the configured database itself'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "bench" -d 'Measure the performance workloads end to end (simulator and syncs as child processes, a fresh database `szb_bench` on the configured server) and print a table'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "completions" -d 'Print the shell completion script for SHELL (bash: source it; zsh: save it as `_szb-sync` in your $fpath; fish: save it in ~/.config/fish/completions/)'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "man" -d 'Print the man page, szb-sync(1), as roff (`szb-sync man | man -l -`)'
complete -c szb-sync -n "__fish_szb_sync_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand sync" -l only -d 'Sync only these configured pairs (comma-separated, or the option repeated). An entry that is not a configured pair stops the command before anything syncs' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand sync" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand sync" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand sync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand run" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand run" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand migrate" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand migrate" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand migrate" -l create-database -d 'Create the configured database first when it does not exist (on the server of database.url, as its user, who needs the CREATEDB privilege)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand check" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand check" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand check" -l offline -d 'Only the configuration: no database, no request (for `ExecStartPre=`)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand status" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand status" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand status" -l json -d 'Print one JSON document (`failing`, `pairs`) instead of the table; the exit code is the same'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -l agent-id -d 'Only rejects of this agent\'s pairs' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -l user-id -d 'Only rejects of this user' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -l since -d 'Only items first seen since then: a duration back from now (`2h`, `7days`) or an RFC 3339 time (`2026-12-01T00:00:00Z`)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -l limit -d 'Show at most this many, newest first' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -l json -d 'Print one JSON document (`matching`, `rejects`) instead of the table; each reject\'s `raw` is the item as served'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand rejects" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand resync" -l agent-id -d 'Only the pairs of this agent' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand resync" -l user-id -d 'Only the pairs of this user (with --agent-id: only that pair)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand resync" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand resync" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand resync" -l all -d 'Every configured pair: each list is read again from its start at the next sync. Without --agent-id or --user-id, resync needs this (on a terminal it asks instead)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand resync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l listen -d 'Address to listen on (port 0: any free port; the first line printed names it)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l users -d 'Instead of the demo world: this many users (ids 1..=N) of agent 105131, token `mock-token`, each with --visits-per-user visits' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l visits-per-user -d 'Visits generated for each of --users' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l latency -d 'Answer every request this much later, as over a real network ("100ms")' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l rate-limit -d 'A server-side rate limit in requests per second (a token bucket with a burst of the same size); requests over it get a 429 with a Retry-After' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l arrivals-every -d 'Turns arrivals on: a step this often ("5s"). They wait for `POST /_sim/arrivals` unless --arrivals-after says when to start' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l arrivals-per-step -d 'Visits opened at each step' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l hot-users -d 'Users in the hot set (drawn once from 1..=--users by --arrivals-seed)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l zipf -d 'The Zipf exponent s over the hot set: the k-th hottest user is picked in proportion to 1/k^s (0: all alike)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l cold-share -d 'The share of picks that go to a uniformly random user of all --users instead (0..=1)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l arrivals-for -d 'Steps stop this long after the first' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l arrivals-after -d 'Start by itself this long after listening, rather than on `POST /_sim/arrivals`' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l arrivals-seed -d 'The seed of the picks: the same seed opens visits for the same users in the same order' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l arrivals-log -d 'Appends one JSON line per visit opened, written as it is opened: {"agent", "user", "activity_id", "visit_at" (RFC 3339), "hot"}. The file is created or emptied at start' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand mock-api" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand demo" -l database-url -d 'Write into this database instead of `szb_demo` on the configured server (created when missing). Rows of the demo\'s simulated agents there are replaced' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand demo" -l database-name -d 'The demo\'s database on the configured server, instead of `szb_demo`. Hidden: the tests use it so that they never touch a `szb_demo` they did not create' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand demo" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand demo" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand bench" -l scale -d 'Divide every workload\'s users by this factor, for a quick look (1: the full workloads)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand bench" -l runs -d 'Runs of each workload, 1..=9; the table shows the median run (by wall time)' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand bench" -l only -d 'Only the workloads whose name contains this text (`--only quiet`, `--only replicas`). Without it, every workload but freshness, which takes about 25 minutes of mostly waiting: `--only freshness`' -r -f
complete -c szb-sync -n "__fish_szb_sync_using_subcommand bench" -s c -l config -d 'Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and bench need none)' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand bench" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand bench" -l smoke -d 'Only the freshness workload, in a quick version that checks its plumbing in about three minutes: 200 pairs, a minute of arrivals, cron every 20 s'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand completions" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand man" -l out-dir -d 'Write szb-sync.1 and a page per subcommand (szb-sync-sync.1, …) into this directory instead' -r -F
complete -c szb-sync -n "__fish_szb_sync_using_subcommand man" -l log-format -d 'Log format: text or json on stderr, or journald. Default: journald when stderr is the journal (under systemd), else text. Filter with RUST_LOG (default: info)' -r -f -a "text\t'Human-readable lines on stderr; coloured only when stderr is a terminal'
json\t'One JSON object per line on stderr, for log collectors'
journald\t'Native journald entries, each field its own (`journalctl -o json`)'"
complete -c szb-sync -n "__fish_szb_sync_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "sync" -d 'One pass over every configured pair, then exit (non-zero if any pair failed)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "run" -d 'The daemon: apply migrations, sync at start and on schedule.cron, stop cleanly on SIGTERM'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "migrate" -d 'Apply the database migrations and exit'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "check" -d 'Check the configuration, the database and each agent\'s token (one request per agent)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "status" -d 'Show each pair\'s mark, last run and last error; exits 1 when a configured pair is failing'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "rejects" -d 'List the items the platform sent that are not valid visits, newest first, with why'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "resync" -d 'Forget the marks of configured pairs so the next sync re-reads them from the start (after rejects were fixed upstream, say). Stored visits stay'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "mock-api" -d 'Serve the built-in simulator of the upstream API (reads no configuration file)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "demo" -d 'Sync a simulated platform into a database of its own and show what landed: `szb_demo` on the configured server (created when missing), never the configured database itself'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "bench" -d 'Measure the performance workloads end to end (simulator and syncs as child processes, a fresh database `szb_bench` on the configured server) and print a table'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "completions" -d 'Print the shell completion script for SHELL (bash: source it; zsh: save it as `_szb-sync` in your $fpath; fish: save it in ~/.config/fish/completions/)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "man" -d 'Print the man page, szb-sync(1), as roff (`szb-sync man | man -l -`)'
complete -c szb-sync -n "__fish_szb_sync_using_subcommand help; and not __fish_seen_subcommand_from sync run migrate check status rejects resync mock-api demo bench completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
