
openaffine_stats"
kind
layer_norm"
epsilon	!üฉ๑าMbP?*
inputFP32*
gammaFP32*
betaFP322
output2
mean2
rstd:@i๐ฐ>‘UR?/ฉ>Ûอฆฟgลg?5ไ>ฤu	ฟ(ฤ?<ฉบ>–>รี่<b๕?A<ฟÞั&พXุ๖พüM?: i๐ฐ>‘UR?/ฉ>Ûอฆฟgลg?5ไ>ฤu	ฟ(ฤ?: <ฉบ>–>รี่<b๕?A<ฟÞั&พXุ๖พüM?