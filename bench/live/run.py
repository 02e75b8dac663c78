"""Live-updates benchmark: what gateway processes hold, and how fast they fan events out.

The distributed stack (one uvicorn process per service on the local PostgreSQL, RabbitMQ and
Redis; the live log in Redis), then two measurements against fresh gateway processes: one, or
with `--gateways N` N replicas on ports of their own, each binding its own exclusive queue and
appending every event to the one log, as replicas do in a deployment (decision 0074), the
sockets spread evenly over them:

1. idle sockets: N sockets opened (OPEN_AT_ONCE handshakes at a time) and held, answering
   pings; each handshake's time (connect to `hello`), and the gateways' RSS before and after,
   per socket.
2. fan-out, for each RATE:SOCKETS asked: S sockets (spread over a few users), events
   published straight to RabbitMQ at R events/s for D seconds (task.created, as the tasks
   relay would right after the commit) by a process of their own, each carrying the time it
   was published; every socket reads every message. The sockets are read by one client
   process, or with `--client-processes K` by K, each a run of them. Before the measured
   events, `--warm-up` seconds of events at the same rate, not counted: the first second of
   events to fresh replicas was the slowest (decision 0093). Printed: messages received
   against expected, delay from publish to receipt p50/p99 (sockets of a sample, 1 in
   SAMPLE_EVERY; and the p99 of each second of publishing, their median and highest, as
   others' work on shared cores comes in bursts) and the same delay in two stages, cut where
   the live log numbered the event (Redis stamps each entry with its own clock, to the ms;
   with replicas, the first append of an event numbers it), frames/s delivered, the
   gateways' CPU time, each and per frame (the figure the client's own limits do not bend),
   and the CPU of each client process, of the rest of the stack, and of Redis and RabbitMQ
   when this user may read theirs (shared with whatever else uses them).

The events reach the gateway only: the other services that consume task events (notifier,
analytics) run on the in-process bus here. Each handles a batch in a database transaction, and
on the same cores they took more CPU than the gateway (at 500 events/s, 3.9 and 2.0 s against
its 4.7 s over 10 s, load 8), a load a deployment puts elsewhere and no part of the gateway's
latency.

With `--before DIR` (a checkout of the code to compare with, e.g.
`git archive main | tar -x -C /tmp/live-before`), every measurement runs with the gateway of
DIR and with this one in turn, fresh gateway processes each, on the same stack; so does every
count of `--gateways 1,2` and `--client-processes 1,2`, the whole `--rounds` times.

    make bench-live                         # python -m bench.live.run --idle 1000
    python -m bench.live.run --idle 10000 --fan-out 50:1000 --fan-out 500:1000 --before DIR
    python -m bench.live.run --idle 0 --fan-out 500:1000 --gateways 1,2 --client-processes 1,2 \
        --seconds 10 --rounds 3

With `--from-api` the tasks service's relay publishes the events, persistent and without
expiry: on a virtual host where other stacks left their durable queues bound (the end-to-end
suite's and bench/gateway's `notifier.events`, `analytics.events`), they pile up there, a
backlog for the day those stacks start again. Give the bench a virtual host of its own:

    rabbitmqctl add_vhost bench-live
    rabbitmqctl set_permissions -p bench-live guest '.*' '.*' '.*'
    TEST_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/bench-live python -m bench.live.run ...

The clients are raw sockets (a handshake, then frames counted and pings answered, no
per-message JSON): a Python client that parsed every message would be what gets measured, as
500 events/s to 1,000 sockets is 500,000 messages/s. The file limit is raised to its hard
limit here, which the gateway inherits (printed). Asserts nothing.

Figures, 2026-11-29, one run, `--before` = main (the gateway of decision 0074), the machine's
2 cores shared with others' tests (load average 18-31 throughout, printed on every line;
decision 0075 has the discussion):

    idle, 10,000 sockets, 200 handshakes at a time (hard file limit 20,000, both processes):
      before: handshake p50 364 ms, p99 4.9 s, 120/s; RSS 117.8 -> 571.8 MiB, 46.5 KiB/socket
      after:  handshake p50 598 ms, p99 8.4 s, 86/s;  RSS 117.9 -> 575.6 MiB, 46.9 KiB/socket
    fan-out to 1,000 sockets for 10 s: messages received within 15 s of the last publish,
    latency p50/p99 (the sample), frames/s delivered, gateway CPU per frame delivered:
      50/s   before 304,000/500,000    p50 17.3 s p99 23.3 s  10.3k/s  25.6 µs
             after  416,507/500,000    p50 12.5 s p99 21.3 s  13.8k/s  10.8 µs
      100/s  before 313,000/1,000,000  p50 19.7 s p99 28.0 s  10.0k/s  25.0 µs  (95/s sent)
             after  563,548/1,000,000  p50 16.8 s p99 25.1 s  17.5k/s   8.9 µs  (81/s sent)
      200/s  before 360,000/2,000,000  p50 28.1 s p99 33.6 s   9.9k/s  26.6 µs  (116/s sent)
             after  570,590/2,000,000  p50 18.1 s p99 24.8 s  20.0k/s   9.7 µs  (198/s sent)
      500/s  before 426,000/5,000,000  p50 20.2 s p99 28.4 s  13.5k/s  26.3 µs  (352/s sent)
             after  545,914/5,000,000  p50 18.6 s p99 31.3 s  16.1k/s  10.8 µs  (300/s sent)
    below the knee, a second run (load 17-20):
      10/s   before 100,000/100,000    p50 54 ms  p99 1.8 s    8.8k/s  32.5 µs
             after  100,000/100,000    p50 86 ms  p99 1.6 s    8.7k/s  16.2 µs
      20/s   before 200,000/200,000    p50 2.2 s  p99 4.3 s   14.5k/s  25.7 µs
             after  200,000/200,000    p50 376 ms p99 3.2 s   16.6k/s  10.4 µs

The flush window (decision 0076), 2026-11-29, `--before` = main (the gateway of 0075), load
average 25-47 (others' suites and benches on the same cores; the publisher fell short of the
rate from 100/s up), fan-out to 1,000 sockets for 10 s, same columns:
      50/s   before 465,710/500,000    p50 15.7 s p99 21.4 s  14.8k/s  10.0 µs
             after  500,000/500,000    p50 13.6 s p99 15.9 s  19.3k/s   5.4 µs
      100/s  before 460,896/1,000,000  p50 21.7 s p99 28.9 s  13.1k/s  11.1 µs  (90/s sent)
             after  690,196/1,000,000  p50 22.9 s p99 25.6 s  21.2k/s   5.5 µs
      200/s  before 586,994/2,000,000  p50 29.3 s p99 39.1 s  12.4k/s  11.1 µs  (80/s sent)
             after  1,392,382/2,000,000 p50 20.7 s p99 24.4 s 40.5k/s   4.0 µs  (141/s sent)
      500/s  before 1,028,845/5,000,000 p50 32.9 s p99 58.3 s 15.0k/s  10.5 µs  (103/s sent)
             after  862,918/5,000,000  p50 36.5 s p99 46.8 s  16.1k/s   6.1 µs  (145/s sent)

The live queue taken a batch at a time and acknowledged in bulk (decision 0077), 2026-11-29,
`--idle 0 --before DIR` (DIR = main, the gateway of 0076), 5 s of events per rate, main first
then this one, load average 12-20 (another helper's benchmarks and the lead's tests on the same
2 cores; the publisher fell short at 500/s), same columns:
    1,000 sockets (load 12-15):
      100/s  before 500,000/500,000    p50 3.6 s  p99 5.8 s   62.8k/s   2.6 µs
             after  500,000/500,000    p50 537 ms p99 2.7 s   72.1k/s   2.0 µs  (99/s sent)
      200/s  before 1,000,000/1,000,000 p50 2.2 s p99 4.3 s  112.8k/s   1.9 µs
             after  1,000,000/1,000,000 p50 1.3 s p99 4.5 s  119.5k/s   1.2 µs  (184/s sent)
      500/s  before 1,461,238/2,500,000 p50 18.4 s p99 22.3 s 42.1k/s   3.4 µs  (148/s sent)
             after  2,500,000/2,500,000 p50 6.4 s p99 11.0 s 110.7k/s   1.3 µs  (207/s sent)
    10 sockets (load 15-20), CPU per frame x 10 = per event:
      200/s  before 10,000/10,000      p50 580 ms p99 3.1 s    1.4k/s  95.0 µs
             after  10,000/10,000      p50 38 ms  p99 132 ms   1.9k/s  76.0 µs  (189/s sent)
      500/s  before 25,000/25,000      p50 1.8 s  p99 3.2 s    1.8k/s  64.8 µs  (206/s sent)
             after  25,000/25,000      p50 48 ms  p99 762 ms   1.9k/s  50.8 µs  (224/s sent)
    1 socket, 300/s for 15 s, twice, alternating (load 16-19): CPU per event 662 -> 522 µs and
    618 -> 458 µs; p50 2.7 s and 3.4 s (main fell behind) -> 58 ms and 41 ms, p99 7.4 s and
    6.4 s -> 857 ms and 277 ms.

On a quiet machine (load 1.6-2.9), 2026-11-29, `--before` = edeac38 (the gateway of 0076)
and main with 0077 in turn, fan-out to 1,000 sockets for 10 s, every message delivered in all
runs, latency p50/p99, frames/s, gateway CPU per frame:
      100/s  before  p50 33.9 ms  p99 67.9 ms   97.8k/s  3.7 µs
             after   p50 34.7 ms  p99 68.3 ms   97.3k/s  3.7 µs
      200/s  before  p50 49.4 ms  p99 112.9 ms  193k/s   2.0 µs
             after   p50 49.3 ms  p99 94.2 ms   194k/s   2.0 µs
      500/s  before  p50 2.51 s   p99 4.65 s    411k/s   1.2 µs
             after   p50 238 ms   p99 887 ms    480k/s   0.8 µs
Two more runs of the new code alone at 500/s: p50 132 and 171 ms, p99 355 and 628 ms, with the
gateway's CPU 3.7-3.8 s and the clients' 3.8 s over the 10 s (at 100/s: 3.8 s and 2.9 s). The
gateway's CPU hardly depends on the rate: with the flush window each socket gets one write
per 20 ms whenever events come (about 7.6 µs per write). At 500/s the gateway takes under
half a core, and the publisher, RabbitMQ, Redis and the 1,000 clients share the rest of the
two cores: the latency above 100/s is that machine's queueing, not the gateway's alone.

The bench's events to the gateway alone (decision 0078: notifier and analytics off the bus;
the client's cheaper parse from the third round on), 2026-11-29, `--idle 0 --fan-out
100:1000 --fan-out 500:1000 --seconds 10`, main's bench and this one in turn (the same
gateway), six rounds, others' benches on the same 2 cores (load average 4.8-18.5, each run's
own in brackets), latency p50/p99 and, at 500/s, events published per second; every message
delivered but in one run (*):
      100/s  before  642 ms/1.50 s (16.6)   136 ms/440 ms (10.2)   80.8 ms/296 ms (12.5)
                     941 ms/2.64 s (16.9)   36.7 ms/84.8 ms (11.4) 523 ms/1.16 s (13.5)
             after   27.3 ms/85.1 ms (12.9) 44.0 ms/1.79 s (11.9)  90.9 ms/665 ms (16.8)
                     177 ms/838 ms (13.5)   28.5 ms/194 ms (6.6)   113 ms/353 ms (12.0)
      500/s  before  8.69 s/16.7 s 175/s (15.7)  15.7 s/17.5 s 368/s (10.8)
                     4.34 s/8.35 s 248/s (11.8)  14.6 s/19.8 s 283/s (14.9) *
                     513 ms/952 ms 500/s (9.1)   10.7 s/16.4 s 229/s (13.6)
             after   4.83 s/6.71 s 500/s (9.6)   1.65 s/2.69 s 500/s (11.3)
                     1.12 s/2.29 s 500/s (18.5)  6.21 s/10.2 s 417/s (13.2)
                     30.7 ms/154 ms 500/s (4.8)  3.86 s/6.93 s 428/s (10.6)
(*) 4,652,500 of 5,000,000 within 15 s of the last publish. Medians of the six: at 100/s p50
329 -> 67.5 ms (0.21x), p99 799 -> 509 ms (0.64x, within the noise); at 500/s p50 9.70 ->
2.75 s (0.28x), p99 16.6 -> 4.70 s (0.28x), with the publisher reaching 500/s in four runs of
six instead of one. The split, after: at 100/s publish -> numbered p50 1.9-93 ms, numbered
-> read p50 22-58 ms (the flush window and a flush); at 500/s, whenever the gateway fell
behind, it was before the log (publish -> numbered p50 0.29-6.1 s, numbered -> read 0.13-0.74
s). In the one quieter run (load 4.8) 500 events/s to 1,000 sockets came at p50 30.7 ms, p99
154 ms. The clients' CPU at 500/s: 3.4-4.7 s before, 2.6-4.6 s after with the cheaper parse:
its 0.73-0.82x time per frame is within this machine's noise.

Then on a quiet machine (load 1.2-2.9, nothing else running), this bench once, 1,000 sockets
for 10 s, every message delivered: 100/s p50 31.2 ms, p99 141.4 ms (publish -> numbered p50
4.6 ms, numbered -> read 22.7 ms; gateway CPU 5.5 s, clients 3.2 s, the rest 2.2 s); 500/s
p50 44.7 ms, p99 117.6 ms (publish -> numbered p50 13.3 ms p99 63.0 ms, numbered -> read 29.6
ms p99 83.2 ms; gateway CPU 6.4 s, 1.3 µs per frame, clients 5.2 s, the rest 1.7 s). Against
the last quiet figures with notifier and analytics on the same cores (decision 0077: p50
132-238 ms, p99 355-887 ms at 500/s), the gateway alone is within 2.4x of the 50 ms aim at p99.

Over gateway replicas (decision 0093), 2026-11-29, `--idle 0 --fan-out 500:1000 --fan-out
100:1000 --gateways 1,2 --client-processes 1,2 --seconds 10` (2 s warm-up), each configuration
in turn, three runs of one to three rounds, with the lead's benchmarks on the same 2 cores
taking a core for tens of seconds at a time; latency p50/p99 in ms (or s), events published
per second where short of the rate, load average in brackets; every message delivered, no
socket closed:
    500/s  1 gateway,  1 client process   54.3/215 (4.5)   71.9/201 (2.4)   23.3/47.0 (3.9)
                                          41.3/369 (7.1)   82.7/255 (3.3)   71.5/220 (5.0)
                                          118/1.04 s 487/s (5.1)            23.8/48.1 (3.5)
           1 gateway,  2 client processes 65.2/1.22 s 481/s (4.3)  65.2/493 455/s (3.0)
                                          33.4/250 (6.0)   31.7/148 (6.8)   29.8/75.3 (2.9)
           2 gateways, 1 client process   22.4/46.0 (4.0)  63.8/365 (4.0)   513/1.68 s (7.1)
                                          20.0/45.1 (4.9)  21.9/178 (2.7)   3.02 s/4.73 s (5.1)
                                          309/3.05 s 489/s (4.5)            23.6/50.7 (3.0)
           2 gateways, 2 client processes 21.2/43.1 (3.4)  2.04 s/5.66 s 433/s (4.6)
                                          233/1.32 s (8.5) 22.6/55.7 (3.8)  61.0/211 (4.0)
    100/s  1 gateway,  1 client process   22.7/46.6 (3.0)  30.2/135 (3.7)   34.7/96.6 (4.9)
                                          37.6/174 (4.4)   23.3/50.2 (2.8)
           1 gateway,  2 client processes 22.9/46.0 (2.2)  35.9/76.8 (4.6)
           2 gateways, 1 client process   21.5/54.3 (2.0)  48.1/519 (5.3)   53.5/483 (4.9)
                                          21.9/46.0 (4.6)  27.7/267 (4.3)
           2 gateways, 2 client processes 19.7/38.6 (1.9)  39.3/296 (4.9)
Two more runs of two replicas alone, 500/s for 25 s, undisturbed: p50 21.5 and 20.9 ms, p99
43.9 and 42.0 ms (p99 by second: median 43.0 and 41.7 ms, highest 52.9 and 45.9 ms), load
3.2-3.3, the replicas 9.5 + 9.6 and 9.1 + 8.9 s of CPU in the 25 s, Redis 1.6-1.7 s. Medians
of the eight 500/s runs with one client process: one gateway p50 62.9 ms, p99 218 ms; two
p50 43.7 ms, p99 271 ms. In the undisturbed runs (p99 under 60 ms) both setups land at
p99 42-51 ms; in the others two replicas fell further behind (they take 1.4-1.6x the CPU of
one: 6.6-7.8 s against 4.9 s per 10 s at 500/s), their intake first (publish -> numbered p50
up to 1.7 s). A second client process changed nothing the runs tell apart.

Then on a quiet machine (load 1.6-2.0), `--idle 0 --fan-out 500:1000
--gateways 1,2 --seconds 10 --rounds 3`, in turn, every message delivered; latency p50/p99
(the median of each second's p99), gateway CPU in the 10 s:
    1 gateway    23.6/47.0 ms (47.2)  24.0/52.7 ms (47.2)  24.5/49.0 ms (50.3)  4.9-5.1 s
    2 gateways   23.1/46.6 ms (45.5)  20.3/40.7 ms (40.8)  20.1/40.3 ms (39.5)  7.0-7.9 s
p99 ratio two/one 0.99, 0.77, 0.82; publish -> numbered p99 15.3-18.4 ms with one process
(the intake waits behind flushes to 1,000 sockets), 6.5-8.7 ms with two; numbered -> read p99
37.1-40.9 and 38.1-43.0 ms. Redis 0.4-0.5 s against 0.6-0.7 s, RabbitMQ 0.9-1.0 s against
1.1-1.4 s. Two replicas meet the aim of p99 under 50 ms in each round, one process in two of
three. At 100/s, three rounds (load 1.5-2.4): one process 24.0/50.3, 22.8/46.7, 25.4/53.7 ms,
two replicas 20.2/45.7, 21.4/47.7, 21.4/52.7 ms, every run with one second whose p99 was
101-141 ms: the client's own garbage collection. With it off in the client processes (as since
then), in turn (load 1.5-1.8):
    100/s  1 gateway    23.1/43.6 ms (41.2)  21.9/42.2 ms (41.2)
           2 gateways   21.2/39.9 ms (40.5)  20.1/40.2 ms (38.3)
    500/s  1 gateway    23.6/46.2 ms (46.7)  23.3/45.2 ms (44.5)  CPU 4.8-5.0 s
           2 gateways   22.6/45.4 ms (45.6)  22.5/47.1 ms (46.0)  CPU 7.6-7.9 s
Both meet the aim at 500/s on a quiet machine; two replicas shorten publish -> numbered (p99
8.6-8.9 against 14.4-14.5 ms) and lengthen numbered -> read (42.4-44.2 against 36.3-37.6 ms).

From the commit (`--from-api`: tasks created through the API, the latency from each task's
`created_at`, the start of its transaction), 2026-11-29, load 1.9-3.0, one gateway process,
1,000 sockets, every message delivered: 100 events/s, two rounds, p50 32.0 and 39.9 ms, p99
69.5 and 84.4 ms, to numbered p50 11.2 and 15.3 ms, p99 42.5 and 50.1 ms; the requests p50
17-20 ms, p99 36-84 ms. The same hour, published straight to RabbitMQ: 100 events/s p50 24.5
ms, p99 45.2 ms; 500 events/s p50 27.4 ms, p99 56.8 ms. 500 tasks/s through the API is more
than this machine serves while fanning out (94/s created). At 20 tasks/s (load 1.3-1.9): to
1,000 sockets p50 16.2 ms, p99 29.7 ms; to 100 sockets p50 10.1 ms, p99 15.2 ms; to numbered
p50 6.4-7.5 ms, p99 11 ms.

At 500 tasks/s through the API in bulk (`--from-api-batch N`: 500/N requests a second of N
tasks each, one task_created event per task through the outbox relay; each task's time is the
start of its bulk transaction, so the whole insert is counted), 2026-11-30, one gateway
process, 1,000 sockets, 10 s after a 2 s warm-up, every message delivered, each kind in turn
with a straight publish at 500 events/s as reference. The lead's profiling shared the 2 cores
throughout: the straight publish, p99 45-47 ms on a quiet machine, came at 0.5-12.6 s. Latency
p50/p99, tasks created (events published) per second where short of 500, the load average at
the run's end; the requests' own p50/p99; "pickup": from a task's `created_at` to the start of
the relay's batch that took it (its outbox row's `sent_at`, read from the database after the
run); CPU in the run of the gateway, the clients and the rest of the stack:
    the lead's profiling at its busiest (load 4.5-4.8 at each run's end):
      bulk of 10   9.16/14.2 s 251/s (4.45)   9.13/12.0 s 311/s (4.75)
      bulk of 50   12.9/14.5 s 493/s (4.62)   10.6/12.0 s 482/s (4.53)
      published    2.20/6.08 s 488/s (4.77)   481 ms/1.45 s (4.56)
    1-minute load under 1.5 before each run, 2.5-2.9 at its end:
      bulk of 10   6.02/8.31 s 425/s (2.89)   requests 740 ms/3.48 s, pickup 2.13/3.59 s
                   6.25/7.21 s 491/s (2.82)   requests 225/667 ms,    pickup 1.77/2.99 s
                   gateway 8.9-9.1 s, clients 8.2-8.4 s, the rest 6.7-6.8 s
      bulk of 50   1.02/1.54 s (2.68)         requests 77/125 ms,     pickup 30/48 ms
                   305 ms/1.02 s (2.73)       requests 67/130 ms,     pickup 25/54 ms
                   gateway 6.3-6.8 s, clients 7.3 s, the rest 3.6-3.9 s
      published    964 ms/1.87 s (2.65)       1.59/2.56 s (2.51)
                   gateway 7.4-7.7 s, clients 7.0-7.4 s, the rest 0.7-0.8 s
    load under 1.0 before each run, 2.7-2.9 at its end, two pairs:
      bulk of 50   1.33/2.31 s (2.73)         requests 84/183 ms,     pickup 34/96 ms
                   496/739 ms (2.70)          requests 66/143 ms,     pickup 25/65 ms
      published    160/517 ms (2.86)          10.9/12.6 s 343/s (4.62: the lead's gateway
                                              bench started during it)
    two gateway processes of 500 sockets (load under 1.2 before each run, 3.0-3.1 at its end):
      bulk of 50   2.09/3.90 s (2.96)         requests 90/177 ms,     pickup 34/243 ms
      published    519 ms/1.79 s (3.13)
In bulks of 10 (50 requests a second) the API path is what falls behind: the requests take
0.23-0.74 s at p50, the relay picks the rows up 1.8-2.1 s after their transaction began, the
services behind the gateway spend 6.7-6.8 s of CPU in the run, and the gateway, which also
proxies the requests, 9 s. In bulks of 50 (10 requests a second) the tasks service keeps up (pickup
p50 25-34 ms, the insert of the 50 and the commit included) and the seconds are the gateway's
intake behind on the shared cores (transaction -> numbered p50 0.2-1.3 s; numbered -> read
p50 30-54 ms), as with the straight publish in the same sitting (publish -> numbered p50
0.05-1.4 s). The bench alone then asks the 2 cores for about 18-21 s of CPU over the run's
10-12 s (gateway, clients, tasks service, RabbitMQ 1.1-1.3 s, Redis 0.4 s): nothing is left for
anyone else's work, and any of it queues every stage. The aim from the commit at 500 events/s
needs the writers and the relay on cores other than the gateway's (and the 1,000 clients off
them); this machine cannot show it.
Then alone on the machine (load 1.7-3.3), two pairs in turn: the straight publish p99 0.90
and 3.1 s, bulks of 50 p99 3.0 and 3.8 s (publish -> numbered p50 0.3-2.8 s). That machine was
two to three times slower than the one of the 45-47 ms above (decision 0096 has the figures),
so the aim at 500 events/s was not judged that day.

For tasks created through the API the stages are three: from the start of the transaction to
the relay batch that took the event (its outbox row's `sent_at`, read after the run), from
there to numbered, and to the read. 2026-11-30, a quiet machine at its usual speed (load
1.2-2.8), 1,000 sockets, `WS_FLUSH_MS` 10 and 20 in turn (decision 0097 has every run), p50/p99:
    500/s published         10 ms  14.7/29.8 ms, 14.7/29.2 ms      20 ms  22.0/43.1, 22.0/42.7 ms
    100/s published         10 ms  14.4/27.7 ms, 13.5/28.3 ms      20 ms  21.3/40.7 ms
    100/s, one POST each    10 ms  19.5/40.2 ms                     20 ms  21.6/50.0 ms
      transaction -> relay 3.1/11.6 ms, relay -> numbered 2.1/17.8 ms (10 ms)
    500/s, bulks of 50      10 ms  42.3/60.0 ms, 41.6/59.5 ms      20 ms  55.4/77.2 ms
      transaction -> relay 5.9/10.6 ms, relay -> numbered 19.5/50.9 ms (10 ms): the relay
      publishes the 50 rows of a burst one message after another, about 100 us of CPU each,
      and the gateway parses them one by one between flushes to 1,000 sockets
    500/s, bulks of 25      10 ms  43.2/71.8 ms, 43.7/72.1 ms
    500/s, bulks of 10      10 ms  44.6/83.9 ms, 48.8/95.3 ms (50 requests a second, proxied)
"""

import argparse
import asyncio
import base64
import contextlib
import gc
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import psutil
from redis.asyncio import Redis

from bench.stacks import cpu_seconds
from bench.tasks.run import percentile
from gateway.streams import RedisLog, log_namespace
from taskhub_common.contracts import TASK_CREATED
from taskhub_common.events import EventEnvelope
from taskhub_common.testing import RABBITMQ_URL, REDIS_HOST, new_user, recreate_database
from taskhub_common.testing.live import rabbitmq_exchange, task_data
from tests.e2e.stack import Process, Stack, free_port

DATABASE = "taskhub_bench_live"
# The live log's Redis database, as the gateway reads it from REDIS_DB.
REDIS_DB = int(os.environ.get("REDIS_DB", "0"))
BENCH_ENV = {
    "RATE_LIMIT_DEFAULT": "1000000/minute",
    "RATE_LIMIT_AUTH": "1000000/minute",
    "WS_HANDSHAKE_RATE": "1000000/minute",
    "WS_MAX_PER_USER": "1000000",
    "LOG_LEVEL": "WARNING",
}
# The other consumers of task events, on the in-process bus: the bench's events reach the
# gateway only (see above).
OFF_THE_BUS = {name: {"RABBITMQ_URL": ""} for name in ("notifier", "analytics")}
# A published event expires from a queue nobody reads (one those services left bound before).
EVENT_TTL_SECONDS = 60
SOCKETS_PER_USER = 250
OPEN_AT_ONCE = 200
# Prime: the sample falls on every replica and every client process alike (replicas take every
# Nth socket, client processes a run of them).
SAMPLE_EVERY = 11
DRAIN_SECONDS = 15.0
# Connections of the process that creates tasks through the API (`--from-api`).
API_CONNECTIONS = 16
# Where a task message carries the time its event was made: the bench's own events are made
# as they are published; a task created through the API has the time its transaction began,
# just before the commit.
TIME_FIELD = b'"created_at": "'
PONG = 0x8A


def raise_file_limit(sockets: int) -> None:
    """Sockets are files, in this process and in the gateway (which inherits the limit): as
    many as the hard limit allows, and say so when that is fewer than asked for."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < sockets + 1000:
        print(f"warning: the hard limit of open files is {hard}, fewer than {sockets} sockets")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def published_at(message: bytes, start: int = 0, end: int | None = None) -> float:
    """The time a message's event was published: its task's `created_at` (the last one: the
    task's creator and assignee, nested before it, have theirs)."""
    at = message.rindex(TIME_FIELD, start, end) + len(TIME_FIELD)
    return datetime.fromisoformat(message[at : message.index(b'"', at)].decode()).timestamp()


class RawSocket(asyncio.Protocol):
    """A WebSocket client that costs as little as it can: the handshake, then frame headers
    read to count event messages (text frames starting with `{"seq"`), pings answered, and
    for a socket of the sample, each event's publish time read from its bytes."""

    def __init__(self, request: bytes, reads: list[tuple[float, float]] | None) -> None:
        self.request = request
        # For a socket of the sample: (published at, read at) of each event.
        self.reads = reads
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.events = 0
        self.first_event_at = 0.0
        self.last_event_at = 0.0
        self.close_code: int | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.hello.done():
            self.hello.set_exception(ConnectionError(f"closed before hello: {self.close_code}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        at = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.hello.set_exception(ConnectionError(buf[: buf.find(b"\r\n")].decode()))
                return
            self.upgraded, at = True, end + 4
        now = time.time()
        size = len(buf)
        events = 0
        # Per frame as little as can be (the clients share the cores with what they measure):
        # its header, and its first bytes; counts and times kept once per read.
        while at + 2 <= size:
            length = buf[at + 1] & 0x7F
            if length < 126:
                start = at + 2
            elif length == 126:
                if at + 4 > size:
                    break
                length, start = buf[at + 2] << 8 | buf[at + 3], at + 4
            else:
                if at + 10 > size:
                    break
                length, start = int.from_bytes(buf[at + 2 : at + 10]), at + 10
            end = start + length
            if end > size:
                break
            opcode = buf[at] & 0x0F
            if opcode == 0x1:
                if buf.startswith(b'{"seq"', start):
                    events += 1
                    if self.reads is not None:
                        self.reads.append((published_at(buf, start, end), now))
                elif not self.hello.done():
                    self.hello.set_result(None)
            elif opcode == 0x9:  # ping: a pong, masked with a zero key, as a client must
                assert self.transport is not None
                self.transport.write(bytes((PONG, 0x80 | length)) + b"\0\0\0\0" + buf[start:end])
            elif opcode == 0x8:
                self.close_code = int.from_bytes(buf[start : start + 2]) if length >= 2 else None
            at = end
        self.buffer = buf[at:]
        if events:
            self.events += events
            self.first_event_at = self.first_event_at or now
            self.last_event_at = now

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Clients:
    sockets: list[RawSocket] = field(default_factory=list)
    handshakes: list[float] = field(default_factory=list)
    reads: list[tuple[float, float]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(socket.events for socket in self.sockets)

    def close(self) -> None:
        for socket in self.sockets:
            socket.close()


@dataclass(frozen=True)
class Target:
    """One socket to open: the gateway replica it goes to, its token, and whether it is one of
    the sample whose every read is timed."""

    url: str
    token: str
    sampled: bool


def upgrade_request(host: str, port: int, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: bearer, {token}\r\n\r\n"
    ).encode()


async def targets(urls: list[str], sockets: int) -> list[Target]:
    """One access token per socket, a new user per SOCKETS_PER_USER sockets; the sockets
    spread evenly over the gateway replicas at `urls`."""
    users = max(1, -(-sockets // SOCKETS_PER_USER))
    async with httpx.AsyncClient(base_url=urls[0], timeout=60) as client:
        made = []
        for _ in range(users):
            response = await client.post("/api/auth/register", json=new_user())
            response.raise_for_status()
            made.append(response.json()["access_token"])
    return [
        Target(urls[i % len(urls)], made[i % users], i % SAMPLE_EVERY == 0) for i in range(sockets)
    ]


async def open_clients(targets: list[Target]) -> Clients:
    loop = asyncio.get_running_loop()
    clients = Clients()

    async def open_one(target: Target) -> None:
        host, port = target.url.removeprefix("http://").split(":")
        request = upgrade_request(host, int(port), target.token)
        started = time.perf_counter()
        _, socket = await loop.create_connection(
            lambda: RawSocket(request, clients.reads if target.sampled else None), host, int(port)
        )
        await socket.hello
        clients.handshakes.append(time.perf_counter() - started)
        clients.sockets.append(socket)

    for start in range(0, len(targets), OPEN_AT_ONCE):
        await asyncio.gather(*map(open_one, targets[start : start + OPEN_AT_ONCE]))
    return clients


@dataclass
class Received:
    """What one client process's sockets got in a fan-out."""

    events: int
    first_event_at: float
    last_event_at: float
    closed: int
    reads: list[tuple[float, float]]


def client_process(pipe: Connection, targets: list[Target]) -> None:
    """A process of clients (so that reading 1,000 sockets need not be one event loop's work):
    opens its sockets and says how many; then, each time it is told how many events were
    published, reads until each socket has them all (or DRAIN_SECONDS pass), and sends back
    what it received, counting from zero again for the next publish; None ends it."""
    asyncio.run(_client_process(pipe, targets))


async def _client_process(pipe: Connection, targets: list[Target]) -> None:
    loop = asyncio.get_running_loop()
    clients = await open_clients(targets)
    # No garbage collection while reading: a full one over the 1,000 sockets' objects and the
    # reads kept took tens of ms, counted as latency (the highest second's p99 at 100 events/s,
    # 101-141 ms with it, 43-57 ms without); reading makes no cycles to collect.
    gc.disable()
    pipe.send(len(clients.sockets))
    # The pipe is read in a thread: the loop keeps reading the sockets meanwhile.
    while (sent := await loop.run_in_executor(None, pipe.recv)) is not None:
        expected = sent * len(clients.sockets)
        deadline = time.monotonic() + DRAIN_SECONDS
        while clients.events < expected and time.monotonic() < deadline:
            if all(socket.lost for socket in clients.sockets):
                break
            await asyncio.sleep(0.1)
        reached = [socket for socket in clients.sockets if socket.events]
        pipe.send(
            Received(
                clients.events,
                min((socket.first_event_at for socket in reached), default=0.0),
                max((socket.last_event_at for socket in reached), default=0.0),
                sum(socket.lost for socket in clients.sockets),
                list(clients.reads),
            )
        )
        clients.reads.clear()
        for socket in clients.sockets:
            socket.events, socket.first_event_at, socket.last_event_at = 0, 0.0, 0.0
    clients.close()


def publish(rate: int, seconds: float) -> tuple[int, float]:
    """In a process of its own (its pace not bent by the clients): events at `rate` for
    `seconds`, each at its slot; how many, and how long it took."""
    return asyncio.run(_publish(rate, seconds))


async def _publish(rate: int, seconds: float) -> tuple[int, float]:
    count = int(rate * seconds)
    async with rabbitmq_exchange() as exchange:
        started = time.monotonic()
        for sent in range(count):
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # The time of publishing travels in the task: made now.
            data = task_data(title="bench")
            event = EventEnvelope(type=TASK_CREATED, producer="bench", data=data)
            message = aio_pika.Message(
                event.model_dump_json().encode(), expiration=EVENT_TTL_SECONDS
            )
            await exchange.publish(message, routing_key=event.type)
        return count, time.monotonic() - started


def create_tasks(url: str, token: str, batch: int, rate: int, seconds: float) -> tuple[int, float]:
    """In a process of its own, like `publish`: tasks created through the gateway's API at
    `rate` for `seconds`, each request sent at its slot without waiting for the previous
    answers. A task's `created_at` is the start of its transaction, so the latency counts the
    rest of the transaction, the commit, the tasks service's outbox relay and RabbitMQ too.

    With `batch` > 1, `rate / batch` requests a second to POST /api/tasks/bulk, `batch` tasks
    each: still one task_created event per task, through the same outbox and relay, but one
    transaction per batch. Its tasks all have the `created_at` of the start of that
    transaction, so their latency counts the whole insert of the batch as well."""
    return asyncio.run(_create_tasks(url, token, batch, rate, seconds))


async def _create_tasks(
    url: str, token: str, batch: int, rate: int, seconds: float
) -> tuple[int, float]:
    count = int(rate * seconds) // batch
    per_second = rate / batch
    path, body = "/api/tasks", {"title": "bench"}
    if batch > 1:
        path, body = "/api/tasks/bulk", {"tasks": [{"title": "bench"}] * batch}
    limits = httpx.Limits(max_connections=API_CONNECTIONS)
    headers = {"Authorization": f"Bearer {token}"}
    answered: list[float] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as api:

        async def create() -> None:
            sent_at = time.perf_counter()
            (await api.post(path, headers=headers, json=body)).raise_for_status()
            answered.append(time.perf_counter() - sent_at)

        started = time.monotonic()
        async with asyncio.TaskGroup() as requests:
            for sent in range(count):
                delay = started + sent / per_second - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                requests.create_task(create())
        took = time.monotonic() - started
    print(f"  the requests that created the tasks took {p50_p99(answered)}", flush=True)
    return count * batch, took


@dataclass
class Gateway:
    """Gateway replicas of the stack's, with the code of `source` (None: this tree): uvicorn
    processes on ports of their own, each binding its own exclusive queue and appending to the
    one live log, as replicas do in a deployment (decision 0074)."""

    name: str
    source: Path | None
    replicas: int
    processes: list[Process] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name}, {self.replicas} gateway{'s' if self.replicas > 1 else ''}"

    @property
    def pids(self) -> list[int]:
        return [process.popen.pid for process in self.processes if process.popen]

    def start(self, stack: Stack, template: Process) -> None:
        env = dict(template.env)
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source / "services" / "gateway")
        for replica in range(self.replicas):
            port = free_port()
            command = list(template.command)
            command[command.index("--port") + 1] = str(port)
            log = stack.workdir / f"gateway-{self.name}-{replica}.log"
            process = Process(f"gateway-{self.name}-{replica}", command, env, log)
            process.start()
            stack.processes.append(process)
            self.processes.append(process)
            self.urls.append(f"http://127.0.0.1:{port}")
        for url in self.urls:
            stack.base_url = url  # whose health the stack waits for
            stack.wait_healthy(120)
        for pid in self.pids:
            limit = psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0]
            if limit < 1100:
                print(f"warning: a gateway may open {limit} files only")

    def stop(self, stack: Stack) -> None:
        for process in self.processes:
            process.stop()
            stack.processes.remove(process)
        self.processes, self.urls = [], []


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def cpus(pids: list[int]) -> list[float]:
    return [cpu_seconds(psutil.Process(pid)) for pid in pids]


class CpuSpent:
    """CPU seconds each process of named groups uses from now on."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.started = {name: cpus(pids) for name, pids in groups.items()}

    def spent(self) -> dict[str, list[float]]:
        return {
            name: [b - a for a, b in zip(self.started[name], cpus(pids), strict=True)]
            for name, pids in self.groups.items()
        }


def servers() -> dict[str, list[int]]:
    """Redis's and RabbitMQ's processes, when this user may see them (shared with whatever else
    uses them): Redis's CPU is where a second replica's appends, de-duplicated by event id,
    cost."""
    names = {"redis-server": "Redis", "beam.smp": "RabbitMQ"}
    found: dict[str, list[int]] = {}
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in names:
            found.setdefault(names[process.info["name"]], []).append(process.pid)
    return found


def cpu_split(seconds: list[float]) -> str:
    """CPU seconds of several processes: each, and their sum when more than one."""
    each = " + ".join(f"{s:.1f}" for s in seconds)
    return f"{each} = {sum(seconds):.1f} s" if len(seconds) > 1 else f"{each} s"


async def idle(gateway: Gateway, count: int) -> None:
    before = sum(map(rss, gateway.pids))
    started = time.perf_counter()
    clients = await open_clients(await targets(gateway.urls, count))
    took = time.perf_counter() - started
    await asyncio.sleep(2)
    after = sum(map(rss, gateway.pids))
    async with httpx.AsyncClient() as client:
        health = [(await client.get(f"{url}/api/health")).json()["live"] for url in gateway.urls]
    clients.close()
    hs = clients.handshakes
    print(
        f"idle [{gateway.label}]: {len(clients.sockets)} sockets held (health: "
        f"{sum(h['sockets'] for h in health)}); handshake p50 {percentile(hs, 0.5) * 1000:.1f} "
        f"ms, p99 {percentile(hs, 0.99) * 1000:.1f} ms, {count / took:.0f}/s ({OPEN_AT_ONCE} at "
        f"a time); gateway RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB, "
        f"{(after - before) / count / 1024:.1f} KiB per socket; {load()}",
        flush=True,
    )


def p50_p99(seconds: list[float]) -> str:
    p50, p99 = percentile(seconds, 0.5) * 1000, percentile(seconds, 0.99) * 1000
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def seconds_p99(reads: list[tuple[float, float]]) -> str:
    """The p99 of each second of publishing, their median and highest: on shared cores others'
    work comes in bursts, which raise some seconds and not the others."""
    start = min(published for published, _ in reads)
    seconds: dict[int, list[float]] = {}
    for published, read in reads:
        seconds.setdefault(int(published - start), []).append(read - published)
    each = sorted(percentile(delays, 0.99) * 1000 for delays in seconds.values())
    return f"p99 by second: median {percentile(each, 0.5):.1f} ms, highest {each[-1]:.1f} ms"


async def stages(reads: list[tuple[float, float]], stack: Stack | None = None) -> str:
    """The latency in two: from publishing to the append that numbered the event in the live
    log (Redis's clock, which stamps each entry, to the ms; the same host's), and from there to
    the client's read (the reply reaching the gateway, the flush window, the writes, the read).
    With several replicas, the append that numbered it is the first of theirs.

    For tasks created through the API (`stack` given), the first part in two again, cut where
    the tasks service's relay took the event: its outbox row's `sent_at`, the start of the
    relay's transaction that published it (read before the relay prunes sent rows)."""
    redis = Redis(host=REDIS_HOST, db=REDIS_DB)
    try:
        log = RedisLog(redis, log_namespace(RABBITMQ_URL, ""), 0, 0).keys[2]
        rows = await redis.xrange(log)
    finally:
        await redis.aclose()
    numbered = {}
    for _, fields in rows:
        with contextlib.suppress(ValueError):  # not one of the bench's events
            numbered[published_at(fields[b"b"])] = int(fields[b"t"]) / 1000
    pairs = [(numbered[p] - p, read - numbered[p]) for p, read in reads if p in numbered]
    if not pairs:
        return "stages unknown (the log no longer holds these events)"
    to_log, to_read = zip(*pairs, strict=True)
    split = f"numbered -> read {p50_p99(list(to_read))}"
    if stack is None:
        return f"publish -> numbered {p50_p99(list(to_log))}, {split}"
    taken = await relay_pickups(stack)
    picked = [
        (taken[us] - p, numbered[p] - taken[us])
        for p, _ in reads
        if p in numbered and (us := round(p * 1e6)) in taken
    ]
    if not picked:
        return f"transaction -> numbered {p50_p99(list(to_log))} (relay unknown), {split}"
    to_relay, relay_to_log = zip(*picked, strict=True)
    return (
        f"transaction -> relay {p50_p99(list(to_relay))}, "
        f"relay -> numbered {p50_p99(list(relay_to_log))}, {split}"
    )


async def relay_pickups(stack: Stack) -> dict[int, float]:
    """When the tasks service's relay took each task_created event, by its task's `created_at`
    in whole µs (the latest of the rows of one transaction, which share that time)."""
    connection = await asyncpg.connect(**stack.database_address())
    try:
        rows = await connection.fetch(
            "SELECT extract(epoch FROM created_at)::float8 AS created,"
            " extract(epoch FROM max(sent_at))::float8 AS sent"
            " FROM tasks.outbox WHERE routing_key = $1 AND sent_at IS NOT NULL"
            " GROUP BY created_at",
            TASK_CREATED,
        )
    finally:
        await connection.close()
    return {round(row["created"] * 1e6): row["sent"] for row in rows}


async def fan_out(
    stack: Stack,
    gateway: Gateway,
    count: int,
    rate: int,
    seconds: float,
    warm_up: float,
    client_processes: int,
    from_api: bool,
    batch: int,
) -> None:
    loop = asyncio.get_running_loop()
    everyone = await targets(gateway.urls, count)
    source = partial(publish, rate)
    if from_api:
        author = (await targets(gateway.urls[:1], 1))[0]
        source = partial(create_tasks, author.url, author.token, batch, rate)
    spawn = get_context("spawn")
    pipes, clients = [], []
    for part in range(client_processes):
        pipe, child_end = spawn.Pipe()
        share = everyone[part * count // client_processes : (part + 1) * count // client_processes]
        process = spawn.Process(target=client_process, args=(child_end, share), daemon=True)
        process.start()
        pipes.append(pipe)
        clients.append(process)
    try:
        opened = sum([await loop.run_in_executor(None, pipe.recv) for pipe in pipes])

        async def publish_and_read(seconds: float) -> tuple[int, float, list[Received]]:
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                sent, took = await loop.run_in_executor(pool, source, seconds)
            for pipe in pipes:
                pipe.send(sent)
            return sent, took, [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]

        if warm_up:
            await publish_and_read(warm_up)
        await asyncio.sleep(1)
        rest = [p.popen.pid for p in stack.processes if p.popen and p.popen.pid not in gateway.pids]
        clock = CpuSpent(
            {
                "gateway": gateway.pids,
                "clients": [process.pid for process in clients],
                "rest": rest,
                **servers(),
            }
        )
        sent, took, received = await publish_and_read(seconds)
        spent = clock.spent()
        for pipe in pipes:
            pipe.send(None)
    finally:
        for process in clients:
            process.join(30)
    expected = sent * count
    events = sum(r.events for r in received)
    first = min((r.first_event_at for r in received if r.events), default=0.0)
    last = max(r.last_event_at for r in received)
    reads = [read for r in received for read in r.reads]
    lat = [read - published for published, read in reads]
    figures = (
        f"{p50_p99(lat)} ({seconds_p99(reads)}); {await stages(reads, stack if from_api else None)}"
        if lat
        else "nothing delivered"
    )
    gateways_cpu, clients_cpu, rest_cpu = (spent.pop(n) for n in ("gateway", "clients", "rest"))
    servers_cpu = "".join(f", {name} {sum(used):.1f} s" for name, used in spent.items())
    # The clients share the two cores: when theirs nears the run's length, they set the pace.
    print(
        f"fan-out [{gateway.label}, {client_processes} client process"
        f"{'es' if client_processes > 1 else ''}]: {rate} events/s "
        f"{api_label(batch) if from_api else ''}({sent / took:.0f} published) "
        f"for {seconds:g} s to {opened} sockets: {events}/{expected} messages, "
        f"{sum(r.closed for r in received)} sockets closed; latency {figures}; "
        f"{events / max(last - first, 1e-9):.0f} frames/s; gateway CPU {cpu_split(gateways_cpu)}, "
        f"{sum(gateways_cpu) / max(events, 1) * 1e6:.1f} µs per frame; clients CPU "
        f"{cpu_split(clients_cpu)}, the rest of the stack's {sum(rest_cpu):.1f} s{servers_cpu}; "
        f"{load()}",
        flush=True,
    )


def api_label(batch: int) -> str:
    if batch == 1:
        return "of tasks created through the API "
    return f"of tasks created through the API in bulk, {batch} a request "


def counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=1000, help="idle sockets (10,000 documented)")
    parser.add_argument(
        "--fan-out",
        action="append",
        metavar="RATE:SOCKETS",
        help="events per second and sockets of a fan-out run (repeatable; default 100:100)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each fan-out")
    parser.add_argument(
        "--warm-up",
        type=float,
        default=2.0,
        help="seconds of events at the same rate before each fan-out, not measured: the first "
        "second of events to fresh replicas was the slowest (default 2)",
    )
    parser.add_argument("--before", type=Path, help="a checkout whose gateway to compare with")
    parser.add_argument(
        "--gateways",
        type=counts,
        default=[1],
        metavar="N[,N...]",
        help="gateway replicas the sockets are spread over, each count in turn (default 1)",
    )
    parser.add_argument(
        "--client-processes",
        type=counts,
        default=[1],
        metavar="N[,N...]",
        help="processes the fan-out's clients are spread over, each count in turn (default 1)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times to run every measurement")
    parser.add_argument(
        "--from-api",
        action="store_true",
        help="events from tasks created through the API (POST /api/tasks at the rate), not "
        "published to RabbitMQ: the latency from the request through the commit and the relay",
    )
    parser.add_argument(
        "--from-api-batch",
        type=int,
        default=1,
        metavar="N",
        help="tasks created through the API N a request (POST /api/tasks/bulk, at most 1000; "
        "implies --from-api), RATE/N requests a second; 1 (the default): one POST /api/tasks a "
        "task",
    )
    args = parser.parse_args()
    if not 1 <= args.from_api_batch <= 1000:
        parser.error("--from-api-batch must be 1 to 1000 (the bulk create's limit)")
    runs = [tuple(map(int, run.split(":"))) for run in args.fan_out or ["100:100"]]
    raise_file_limit(max(args.idle, *(sockets for _, sockets in runs)))
    sources = [("after", None)]
    if args.before:
        sources.insert(0, ("before", args.before.resolve()))
    gateways = [
        Gateway(name, source, replicas) for replicas in args.gateways for name, source in sources
    ]
    await recreate_database(DATABASE)
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-live-"))
    # Ten minutes to start: the machine this runs on is often busy with other work.
    stack = Stack(
        "distributed",
        workdir,
        database=DATABASE,
        extra_env=BENCH_ENV,
        service_env=OFF_THE_BUS,
        start_timeout=600,
    )
    stack.start()
    try:
        template = next(process for process in stack.processes if process.name == "gateway")
        # Each measurement starts gateways of its own.
        template.stop()
        stack.processes.remove(template)
        for _ in range(args.rounds):
            if args.idle:
                for gateway in gateways:
                    gateway.start(stack, template)
                    try:
                        await idle(gateway, args.idle)
                    finally:
                        gateway.stop(stack)
            for rate, sockets in runs:
                for gateway in gateways:
                    for client_processes in args.client_processes:
                        gateway.start(stack, template)
                        try:
                            await fan_out(
                                stack,
                                gateway,
                                sockets,
                                rate,
                                args.seconds,
                                args.warm_up,
                                client_processes,
                                args.from_api or args.from_api_batch > 1,
                                args.from_api_batch,
                            )
                        finally:
                            gateway.stop(stack)
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
