# numpy probe (not part of the suite): rounding floor of int8 values, row-scaled vs
# channel-prescaled (channel rms of the first 256 tokens); exact attention, sinks +
# 64 newest exact, rows n/2..n step 64. Usage: python3 value_floor.py DATA_DIR...
# (needs numpy; e.g. /work/venv-extract/bin/python, see README "Hybrid").
import numpy as np, sys, glob, os
def load(d,h):
    n=8192; f=lambda x: np.fromfile(f"{d}/{h}_{x}.f32",dtype=np.float32).reshape(n,64)
    return f('q'),f('k'),f('v')
def rq(x,bits):
    qm=2**(bits-1)-1
    s=np.abs(x).max(axis=1,keepdims=True)/qm; s[s==0]=1
    return (np.round(x/s)*s).astype(np.float32)
def rq_ch(x,bits,ch):
    return rq(x/ch,bits)*ch
def err(q,k,v,vq,rows,exact_new=64,sinks=4):
    num=0;den=0
    for j in rows:
        vv=vq[:j+1].copy(); vv[:sinks]=v[:sinks]
        lo=max(0,j+1-exact_new); vv[lo:j+1]=v[lo:j+1]
        s=0.125*(k[:j+1]@q[j]); s-=s.max(); w=np.exp(s); w/=w.sum()
        o=w@vv; o0=w@v[:j+1]
        num+=((o-o0)**2).sum(); den+=(o0**2).sum()
    return np.sqrt(num/den)
rows=list(range(4096,8192,64))
for d in sys.argv[1:]:
    for jf in sorted(glob.glob(d+"/L*H*.json")):
        h=os.path.basename(jf)[:-5]
        q,k,v=load(d,h)
        ch=np.sqrt((v[:256]**2).mean(0))+1e-6   # channel rms of the first 256 tokens
        print(h, f"row {err(q,k,v,rq(v,8),rows):.2e}  chan-prescaled {err(q,k,v,rq_ch(v,8,ch),rows):.2e}", flush=True)
