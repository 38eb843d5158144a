# numpy probe (not part of the suite): output error floors of rounded token formats
# (int16 keys with binary16 / int8 / int4 values, int8 keys); exact attention, sinks +
# 64 newest exact. Usage: python3 token_formats.py DATA_DIR...
import numpy as np, sys, glob, os
def load(d,h):
    n=8192; f=lambda x: np.fromfile(f"{d}/{h}_{x}.f32",dtype=np.float32).reshape(n,64)
    return f('q'),f('k'),f('v')
def rq(x,bits,axis=1):
    qm=2**(bits-1)-1
    s=np.abs(x).max(axis=axis,keepdims=True)/qm; s[s==0]=1
    return (np.round(x/s)*s).astype(np.float32)
def err(q,k,v,kq,vq,rows,exact_new=64,sinks=4):
    num=0;den=0
    for j in rows:
        kk=kq[:j+1].copy(); vv=vq[:j+1].copy()
        kk[:sinks]=k[:sinks]; vv[:sinks]=v[:sinks]
        lo=max(0,j+1-exact_new); kk[lo:j+1]=k[lo:j+1]; vv[lo:j+1]=v[lo:j+1]
        s=0.125*(kk@q[j]); s-=s.max(); w=np.exp(s); w/=w.sum(); o=w@vv
        s0=0.125*(k[:j+1]@q[j]); s0-=s0.max(); w0=np.exp(s0); w0/=w0.sum(); o0=w0@v[:j+1]
        num+=((o-o0)**2).sum(); den+=(o0**2).sum()
    return np.sqrt(num/den)
rows=list(range(4096,8192,64))
for d in sys.argv[1:]:
    for jf in sorted(glob.glob(d+"/L*H*.json")):
        h=os.path.basename(jf)[:-5]
        q,k,v=load(d,h)
        k16=rq(k,16)
        r=[err(q,k,v,k16,v.astype(np.float16).astype(np.float32),rows)]
        r.append(err(q,k,v,k16,rq(v,8),rows))
        r.append(err(q,k,v,k16,rq(v,4),rows))
        r.append(err(q,k,v,rq(k,8),v.astype(np.float16).astype(np.float32),rows))
        print(h, " ".join(f"{x:.2e}" for x in r), flush=True)
