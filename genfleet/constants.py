"""Every queue name, Redis key and default of genfleet in one place.

Redis keys (all under the ``genfleet:`` prefix; a job's keys expire ``RESULT_TTL_S``
after the job ends and have no TTL while it is queued or running, unless noted):

``genfleet:job:{job_id}``
    hash: ``record`` (the job's JSON record: id, kind, spec, created_at, mode),
    ``steps`` (JSON list of step ids), ``total``, ``status``, ``started_at``,
    ``finished_at``, ``summary`` (JSON: metrics, error).
``genfleet:job:{job_id}:inputs``
    hash of the job's big inputs (personas, day plans, an image as a data URL).
``genfleet:job:{job_id}:ok``
    hash step_id -> JSON step result; written once per step (HSETNX).
``genfleet:job:{job_id}:failed``
    hash step_id -> JSON step result of the last failed attempt.
``genfleet:job:{job_id}:running``
    hash step_id -> start timestamp of steps in flight; written by older versions
    only (the claims say it now), read for the claims those wrote.
``genfleet:job:{job_id}:claims``
    hash step_id -> "owner @started expiry": the attempt allowed to call the provider
    for a step (``genfleet/claims.py``) and when it began; Redis time, the expiry
    renewed while it works. A step is running while it has a claim.
``genfleet:jobs``
    sorted set job_id -> created_at; the index behind ``genfleet jobs`` (no TTL;
    entries whose job hash has expired are pruned when listed).
``genfleet:lim:*``
    the gateway's cluster-wide limiter state (see ``workers/limiter.py``).
``genfleet:cache:{sha256}``
    cached LLM responses (TTL ``LLM_CACHE_TTL_S``).
``genfleet:keys:disabled:{fingerprint}``
    string "key id: reason" while the key whose text has that fingerprint (a short
    sha256) is out of the pool after a 401/403; its own TTL, growing with repeats.
``genfleet:keys:refusals:{fingerprint}``
    how many times that key was refused lately (the lock-out doubles each time).
``genfleet:keys:disabled``
    hash key id -> fingerprint of the keys refused lately, for ``genfleet stats``.
``genfleet:stats:job:{job_id}``, ``genfleet:stats:key:{key_id}``
    hashes of LLM call counters: calls, ok, failed, retries, rate_limited,
    server_errors, tokens_in, tokens_out, cache_hits, limiter_wait_s,
    effective_concurrency (last seen).
``genfleet:models:{key_id}``
    set of the models a key was used with (for ``genfleet stats`` and the metrics
    exporter; no TTL: a handful of names per key).
``genfleet:stats:cost:{key_id}``
    hash model -> USD spent with this key (``{model}|unpriced``: calls of a model
    without a price, whose cost is unknown).
``genfleet:budget:job:{job_id}``, ``genfleet:budget:day:{YYYY-MM-DD}``
    hashes of spending and reservations against a budget (see ``workers/budget.py``).
``genfleet:lim:learned:{scope}``
    hash of the limits learned from a provider's ``x-ratelimit-*`` headers.
``genfleet:batch:*``
    the Batch API's state: pending requests, live batches, answers (``workers/batch.py``).
"""

from __future__ import annotations

# Queues
QUEUE_LLM = "llm"
QUEUE_IMAGES = "images"
QUEUE_IMAGES_GPU_PREFIX = "images.gpu"  # images.gpu0, images.gpu1, ...
QUEUE_CONTROL = "control"  # job finalisation and other bookkeeping tasks

# Task names: the prefix says the queue (see celeryconfig.task_routes)
TASK_CHAPTER_VERSION = "genfleet.llm.chapter_version"
TASK_FINALIZE = "genfleet.control.finalize_job"
TASK_PERSONA_STAGE = "genfleet.llm.persona_stage"
TASK_PERSONA_MERGE = "genfleet.control.persona_merge"
TASK_TWEET = "genfleet.llm.tweet"
TASK_BATCH_ITEMS = "genfleet.llm.batch_items"
TASK_BATCH_REVIEW = "genfleet.llm.batch_review"
TASK_IMAGE_GENERATE = "genfleet.images.generate"
TASK_BATCH_POLL = "genfleet.control.batch_poll"
TASK_BATCH_CANCEL = "genfleet.control.batch_cancel"
TASK_RECIPE_STAGE = "genfleet.llm.recipe_stage"
TASK_JOIN = "genfleet.control.join"  # a no-op between two groups of a canvas
DEFAULT_IMAGE_GPU_QUEUES = 8  # images.gpu0 .. images.gpu7 are declared up front

# Redis keys
KEY_PREFIX = "genfleet"
KEY_JOB = KEY_PREFIX + ":job:{job_id}"
KEY_JOB_OK = KEY_JOB + ":ok"
KEY_JOB_FAILED = KEY_JOB + ":failed"
KEY_JOB_RUNNING = KEY_JOB + ":running"  # older versions' (see genfleet/store.py)
KEY_JOB_INPUTS = KEY_JOB + ":inputs"
KEY_JOB_CLAIMS = KEY_JOB + ":claims"
KEY_JOB_INDEX = KEY_PREFIX + ":jobs"
KEY_LIMITER_PREFIX = KEY_PREFIX + ":lim"
KEY_CACHE = KEY_PREFIX + ":cache:{digest}"  # a cached chat response (TTL LLM_CACHE_TTL_S)
KEY_DISABLED_KEYS = KEY_PREFIX + ":keys:disabled"  # hash key_id -> fingerprint (401/403)
KEY_DISABLED_KEY = KEY_DISABLED_KEYS + ":{fingerprint}"  # "key_id: why", TTL = lock-out
KEY_KEY_REFUSALS = KEY_PREFIX + ":keys:refusals:{fingerprint}"  # refusals lately
KEY_STATS_JOB = KEY_PREFIX + ":stats:job:{job_id}"  # hash of LLM call counters of a job
KEY_STATS_KEY = KEY_PREFIX + ":stats:key:{key_id}"  # hash of LLM call counters of a key
KEY_MODELS = KEY_PREFIX + ":models:{key_id}"  # set of models a key was used with
KEY_STATS_COST = KEY_PREFIX + ":stats:cost:{key_id}"  # hash model -> USD (workers.spend)
KEY_BUDGET_JOB = KEY_PREFIX + ":budget:job:{job_id}"  # a job's spending (workers.budget)
KEY_BUDGET_DAY = KEY_PREFIX + ":budget:day:{day}"  # the cluster's spending on a UTC day
KEY_LEARNED = KEY_LIMITER_PREFIX + ":learned:{scope}"  # limits read from x-ratelimit-*
KEY_BATCH_REQ = KEY_PREFIX + ":batch:req:{rid}"  # hash: one request of the Batch API
KEY_BATCH_PENDING = KEY_PREFIX + ":batch:pending"  # sorted set rid -> time queued
KEY_BATCH_LIVE = KEY_PREFIX + ":batch:live"  # set of batch ids not yet collected
KEY_BATCH = KEY_PREFIX + ":batch:b:{batch_id}"  # hash: one batch at the provider
KEY_BATCH_POLLER = KEY_PREFIX + ":batch:poller"  # set while a poll task is scheduled
KEY_BATCH_LOCK = KEY_PREFIX + ":batch:lock"  # held by the one poll cycle running
KEY_JOB_BATCHES = KEY_JOB + ":batches"  # hash batch id -> JSON (status, counts)
BUDGET_TTL_S = 8 * 24 * 3600  # budget hashes outlive their last call by this
LEARNED_TTL_S = 24 * 3600  # learned limits are forgotten a day after the last answer
DISABLED_KEY_FIRST_S = 30  # a refused key's first lock-out; doubles with each repeat ...
DISABLED_KEY_TTL_S = 3600  # ... up to this

# Job statuses (public: users' scripts compare against these strings)
STATUS_QUEUED = "queued"
STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_PARTIAL = "partial"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"
TERMINAL_STATUSES = frozenset({STATUS_SUCCEEDED, STATUS_PARTIAL, STATUS_FAILED, STATUS_CANCELLED})

# A step not called because its job's (or the day's) budget was reached: its
# error_type, shown as its state by ``genfleet status``.
STEP_BUDGET_EXCEEDED = "budget_exceeded"

# How a job's LLM calls are made: one by one, or through the provider's Batch API.
API_ONLINE = "online"
API_BATCH = "batch"
API_MODES = (API_ONLINE, API_BATCH)

# Job kinds
KIND_CHAPTER = "chapter"
KIND_PERSONA = "persona"
KIND_TWEETS = "tweets"
KIND_BATCH = "batch"
KIND_IMAGES = "images"
KIND_RECIPE = "recipe"  # users' own kinds, from recipe files

# Embedded Redis
EMBEDDED_REDIS_DIR = "redis"
EMBEDDED_REDIS_START_TIMEOUT_S = 10.0

# Inputs
MAX_OUTLINE_CHARS = 20_000
MAX_PROJECT_ID_CHARS = 64

# Gateway retry policy (the one retry layer; the SDK's own retries are off)
RETRY_INITIAL_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 8.0
RETRY_AFTER_MAX_S = 120.0  # a provider's Retry-After above this is capped
# A 429 is the provider asking us to wait, not a failed request: it is retried after
# its Retry-After up to this many times, apart from LLM_MAX_RETRIES (other errors).
RATE_LIMITED_MAX_RETRIES = 10
INLINE_WAIT_MAX_S = 3.0  # longer waits re-schedule the task instead of blocking a slot
# ... except a wait for the limiter (a slot, the rpm/tpm pace, a throttle, a cooldown):
# the worker sleeps without asking Redis, and a re-scheduled task would cost its
# message again and be held by a worker until its time (memory that grows with the
# queue). Longer waits than this re-schedule.
LIMITER_INLINE_WAIT_MAX_S = 10.0
# A call only the rpm limit holds back, for at most this long, is admitted for the time
# it may go and sleeps until then (not refused, then asked again); one that slept at
# least LIMITER_RESERVE_CHECK_S looks whether a 429's cooldown began meanwhile.
LIMITER_RESERVE_MAX_S = LIMITER_INLINE_WAIT_MAX_S
LIMITER_RESERVE_CHECK_S = 1.0
REDIS_OUTAGE_MAX_WAIT_S = 120.0  # a step waits this long for Redis to come back
# A paid-for result is kept in memory and stored again until Redis takes it (a
# restart, maxmemory) for up to this long: storing it beats calling a second time.
RESULT_SAVE_MAX_WAIT_S = 6 * 3600.0

# Leases: a step's claim and a call's concurrency slot live LEASE_S in Redis and are
# renewed every LEASE_RENEW_S while the work runs, so a dead worker's come back fast.
LEASE_S = 8.0
LEASE_RENEW_S = 2.0

# Limiter
# Keys (see workers/limiter.py): {scope} is Scope.redis_part(), never an API key.
KEY_LIMITER_SCOPE = KEY_LIMITER_PREFIX + ":{scope}"  # + :cooldown :state :leases :rpm :tpm ...
KEY_LIMITER_JOB = KEY_LIMITER_PREFIX + ":job:{job_id}"  # + :next :leases
LIMITER_WINDOW_S = 60.0  # the providers' rate-limit window
LIMITER_WINDOW_MARGIN_S = 1.0  # our window is this much longer, for delivery delays
LIMITER_KEY_TTL_MARGIN_S = 300.0  # idle scope keys expire this long past window/lease
LIMITER_BURST_DIVISOR = 20  # GCRA burst tolerance: max(1, limit // 20)
LIMITER_CONCURRENCY_WAIT_S = 0.05  # wait hint when a slot (not a rate) is the limit
LIMITER_MIN_WAIT_S = 0.001  # every Denied.wait_s is at least this
LIMITER_BACKOFF_INITIAL_S = 1.0  # cooldown after a 429 without Retry-After, doubling ...
LIMITER_BACKOFF_MAX_S = 30.0  # ... up to this
LIMITER_DECREASE_GAP_S = 1.0  # AIMD halves the limit at most once per this
LIMITER_WAKE_TTL_S = 10.0  # a slot waiter's mark (and its wake-up list) lives this long
LIMITER_POLL_INITIAL_S = 0.02  # acquire(): polling for a free slot starts here ...
LIMITER_POLL_MAX_S = 0.25  # ... and grows x LIMITER_POLL_GROWTH up to this
LIMITER_POLL_GROWTH = 1.5
LIMITER_MIN_SLEEP_S = 0.01  # acquire() never sleeps less than this
