"""Image generation: backends, the retry and moderation policy, files, GPU plumbing.

| module | concern |
|---|---|
| ``constants`` | task name, job kind, input limits, worker environment variables |
| ``base`` | ``ImageRequest``, ``Rendered``, the ``ImageBackend`` protocol, ``ContentPolicyError`` |
| ``placeholder``, ``openai_backend``, ``async_task``, ``diffusers_backend`` | the four backends |
| ``remote`` | what the API backends share: key, cluster-wide cap, HTTP errors, decoding |
| ``backends`` | the backend of this process, chosen by ``IMAGE_BACKEND``, made once |
| ``simplify`` | the tamer prompt after a moderation rejection |
| ``generate`` | one picture with retries |
| ``prompts``, ``output``, ``step`` | one job step: its prompt, its file, its metadata |
| ``gpus`` | GPU detection, ``--gpus`` parsing, the queues of a GPU's worker |

The task is made by ``workers.kind_tasks`` from the contract ``genfleet.kinds.images``;
the producer side is ``producer.images``.
"""
