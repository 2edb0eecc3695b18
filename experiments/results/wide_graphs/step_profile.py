"""Where a slots network's training step goes (RESULTS.md, "Where a student step goes").

    python step_profile.py [QUICKSTART_DATA_TRAIN]

1. The training program's time a step (`train.make_train`, batch 512, with and without the sampled
   objective term on 128 states), if a quickstart's training data is given.
2. XLA's cost analysis (FLOPs, bytes) and the time of the student's and teacher's forward + backward at
   batch 512 with a partial placement, the rounds' input as the committed batched product and as a
   broadcast multiply-and-sum; a 2048^3 float32 product for the machine's reach.
"""

import dataclasses
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from offload_jax import config, features, models, scenarios, train
from offload_jax.models import NUM_SITES

B = 512


def median_s(f, reps: int = 5, inner: int = 5) -> float:
    jax.block_until_ready(f())
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            jax.block_until_ready(f())
        ts.append((time.perf_counter() - t) / inner)
    return float(np.median(ts))


def training_program(data_dir: str) -> None:
    from offload_jax import dataset, splits  # noqa: PLC0415

    ds = dataset.load(data_dir, max_states=30_000)
    data = splits.prepare(ds.states, ds.label, ds.objective, ds.scenario, holdout=1_000)
    for lw, states in ((0.0, 0), (1.0, 128)):
        cfg = dataclasses.replace(config.TrainConfig(), steps=100_000, batch_size=B, learning_rate=8e-3,
                                  latency_weight=lw, objective_states=states)
        trainer = train.make_train(cfg, config.DAG_STUDENT_MODEL, data.scenario, int(data.train.x.shape[0]),
                                   use_latency=lw > 0)
        rng = jax.random.key(0)
        state = trainer.jitted["init"](rng)
        consts, weights = train.make_consts(cfg, data, None), train.loss_weights(cfg)
        chunk = functools.partial(trainer.jitted["run"], state, rng, weights, consts, 200, 400)
        s = median_s(chunk, reps=3, inner=1)
        term = f"on {states} states" if lw else "off"
        print(f"training program, objective term {term}: {s / 200 * 1e3:.2f} ms a step")


def decode_broadcast(net, context, partial, lead):
    """`SlotNetwork.decode` with each round's aggregation as a broadcast multiply-and-sum."""
    pre, mix = context
    n, slots = pre.shape[0], net.users * net.tasks
    given = partial.reshape(n, slots, NUM_SITES).astype(pre.dtype)
    for site in range(NUM_SITES):
        pre = pre + given[..., site, None] * net.given.kernel[...][site]
    h = net.activation(pre)
    for layer in net.rounds:
        m = jnp.sum(mix[..., None] * h[:, None, :, :], axis=2)  # (n, K U*T, width)
        h = h + net.activation(layer(m.reshape(n, slots, -1)))
    return net.readout(h).reshape(*lead, net.users, net.tasks, NUM_SITES)


def networks() -> None:
    sc = scenarios.make("dag", {"tasks": 10})
    key = jax.random.key(0)
    x = jax.random.normal(key, (B, features.num_features(sc.cfg)))
    partial = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (B, 1, 10), 0, 4), 3)
    y = jax.random.randint(jax.random.key(2), (B, 1, 10), 0, 3)
    for name, mcfg in (("student", config.DAG_STUDENT_MODEL), ("teacher", config.DAG_TEACHER_MODEL)):
        graphdef, params = nnx.split(models.build(mcfg, sc.cfg, rngs=nnx.Rngs(0)))
        logits = {}
        for form in ("batched product", "broadcast sum"):
            def loss(p, form=form, graphdef=graphdef):
                net = nnx.merge(graphdef, p)
                ctx = net.encode(x)
                lg = (net.decode(ctx, partial, x.shape[:-1]) if form == "batched product"
                      else decode_broadcast(net, ctx, partial, x.shape[:-1]))
                return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(lg), y[..., None], -1)), lg

            f = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params).compile()
            cost = f.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            s = median_s(functools.partial(f, params))
            logits[form] = f(params)[0][1]
            flops, moved = cost.get("flops", 0), cost.get("bytes accessed", 0)
            print(f"{name}, {form}: forward + backward {s * 1e3:.2f} ms, {flops / 1e6:.0f} MFLOP "
                  f"({flops / s / 1e9:.0f} GFLOP/s), {moved / 1e6:.1f} MB")
        diff = float(jnp.max(jnp.abs(logits["batched product"] - logits["broadcast sum"])))
        print(f"{name}: largest logit difference between the two forms {diff:.1e}")
    a = jnp.ones((2048, 2048))
    mm = jax.jit(lambda a: a @ a).lower(a).compile()
    print(f"2048^3 float32 product: {2 * 2048 ** 3 / median_s(lambda: mm(a)) / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        training_program(sys.argv[1])
    networks()
