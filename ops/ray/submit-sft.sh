#!/usr/bin/env bash
# One verl SFT round submitted by hand, the way zpd does it (placement = "ray"). Paths must be on
# storage every node sees. Usage: submit-sft.sh http://<head>:8265 /mnt/shared/zpd/verl/round_000001 /path/to/learner
set -euo pipefail
address=$1 round_dir=$2 model=$3
ray job submit --address "$address" --no-wait --entrypoint-num-cpus 1 \
  --runtime-env-json '{"env_vars": {"WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}}' \
  -- python -m verl.trainer.sft_trainer_ray \
  data.train_files="$round_dir/train.parquet" data.val_files=null data.messages_key=messages \
  data.train_batch_size=32 data.micro_batch_size_per_gpu=4 data.use_dynamic_bsz=False \
  data.max_length=1024 data.truncation=right data.pad_mode=no_padding data.num_workers=0 \
  model.path="$model" model.use_remove_padding=True +model.override_config.attn_implementation=sdpa \
  optim.lr=1e-5 checkpoint.save_contents='[model,optimizer,extra,hf_model]' \
  trainer.default_local_dir="$round_dir/ckpt" trainer.resume_mode=disable \
  trainer.total_epochs=2 trainer.save_freq=-1 trainer.test_freq=-1 trainer.logger='[console]' \
  trainer.nnodes=1 trainer.n_gpus_per_node=8
