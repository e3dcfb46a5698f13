-- objective: a bigram language model whose training objective adds an L2
-- penalty to the loss it logs and evaluates (output "objective"), with
-- its one dropout slot not named "dropout".  check_grad checks the
-- gradient is the objective's; suite_trainer.sh trains it.
kind "L2_BIGRAM"
local p = params { ntoken = 9, emsize = 4, l2 = 0.05, drop = 0.1 }
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local w = param("encoder.weight", { p.ntoken, p.emsize }, { uniform = 0.5 })
local d = param("decoder.weight", { p.ntoken, p.emsize }, { uniform = 0.5 })
local e = dropout(embedding(w, tokens), p.drop, "drop")
local logp = log_softmax(matmul(e, d, { tb = true }))
local loss = nll_loss(logp, targets)
output("logp", logp)
output("loss", loss)
output("objective", loss + p.l2 * (sum(w * w, {}) + sum(d * d, {})))
