#!/bin/sh
# tests/e2e/fake_engine.sh: a stand-in for `modula-engine KIND job.json`
# (run by modula-worker in the job's folder) until the real `train` exists.
# It speaks the engine's JSON-lines events: start, progress, a checkpoint,
# then done with one output and one evaluation whose value is 1 when the
# worker put a checkpoint to resume from in checkpoints/, else 0. Spec "crash_once": exit 3 after the
# checkpoint unless resumed; "crash": always exit 3 without a done event.
resumed=0
[ -s checkpoints/step-00000000-resume.safetensors ] && resumed=1
grep -q '"out_dir":[[:space:]]*"\."' job.json || exit 4
echo '{"event":"start","total_steps":4}'
echo '{"event":"progress","step":1,"total_steps":4,"loss":2.5,"lr":0.001,"tokens_per_s":100,"elapsed_s":0.1}'
mkdir -p checkpoints
echo "state at step 2" >checkpoints/step-00000002.safetensors
sha=$(sha256sum checkpoints/step-00000002.safetensors | cut -d' ' -f1)
echo "{\"event\":\"checkpoint\",\"step\":2,\"path\":\"checkpoints/step-00000002.safetensors\",\"sha256\":\"$sha\"}"
if grep -q '"crash"' job.json; then exit 3; fi
if [ $resumed = 0 ] && grep -q '"crash_once"' job.json; then exit 3; fi
echo '{"event":"progress","step":4,"total_steps":4,"loss":1.25,"lr":0.001}'
echo "expert weights $$" >out.bin
osha=$(sha256sum out.bin | cut -d' ' -f1)
echo "{\"event\":\"done\",\"outputs\":[{\"name\":\"expert\",\"path\":\"out.bin\",\"sha256\":\"$osha\"}],\"evaluations\":[{\"domain\":\"flan\",\"metric\":\"acc\",\"value\":$resumed}]}"
